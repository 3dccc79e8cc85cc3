"A loopback HTTP server with fault endpoints for the downloader tests and benchmark."
import io, socket, struct, threading, time, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


def jpeg_bytes(size=(40, 30), color=(200, 40, 40), quality=90):
    buf = io.BytesIO(); Image.new('RGB', size, color).save(buf, 'JPEG', quality=quality); return buf.getvalue()


def png_bytes(size=(32, 32), color=(40, 200, 40), mode='RGB'):
    buf = io.BytesIO(); Image.new(mode, size, color).save(buf, 'PNG'); return buf.getvalue()


def bomb_png(w=30000, h=30000):
    "A tiny PNG whose header claims `w`x`h` pixels (a decompression bomb for Pillow)"
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)   # 1-bit grayscale
    idat = zlib.compress(b'\x00' * (1 + (w + 7)//8) * 16)   # a few rows: the header is what matters
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


HTML = b'<!doctype html><html><body>Sorry, this image moved. 200 OK.</body></html>'
FAULTS = ('404', 'flaky', 'html', 'truncated', 'empty', 'loop', 'reset', 'big', 'bigstream', 'stall', 'bomb',
          'dupA', 'dupB', 'ok_query', 'wrongtype', 'gone500', 'trickle', 'noheaders')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256   # the default listen backlog (5) drops SYNs under concurrency: 1 s client stalls


class FaultServer:
    """Serve `files` ({name: bytes}, at /img/<name>) and fault endpoints at /f/<kind>[/<id>] on 127.0.0.1.
    Use as a context manager; `url(kind)` gives a fault URL. `stall` seconds bound how long /f/stall waits.
    /f/trickle sends headers, then one byte every `trickle_every` seconds; /f/noheaders accepts the connection and
    sends nothing; both give up after `trickle_for` seconds (so a test never leaves them running)."""
    def __init__(self, files=None, stall=3.0, big=50_000_000, host='127.0.0.1', latency=0.0, trickle_every=0.5, trickle_for=30.0):
        self.files, self.stall, self.big, self.latency = dict(files or {}), stall, big, latency
        self.trickle_every, self.trickle_for = trickle_every, trickle_for
        self.hits, self.lock = {}, threading.Lock()
        self.img = jpeg_bytes()
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def setup(self):   # headers and body go out as separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms a request
                super().setup(); self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            def send(self, code, body=b'', ctype='image/jpeg', extra=()):
                self.send_response(code); self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body)))
                for k, v in extra: self.send_header(k, v)
                self.end_headers()
                if self.command != 'HEAD' and body: self.wfile.write(body)
            def do_GET(self):
                p = self.path
                if srv.latency: time.sleep(srv.latency)   # a simulated network round trip
                with srv.lock: srv.hits[p] = srv.hits.get(p, 0) + 1; n = srv.hits[p]
                if p.startswith('/img/'):
                    name = p[5:].split('?')[0]
                    if name in srv.files: return self.send(200, srv.files[name])
                    return self.send(404, b'not found', 'text/plain')
                kind = p[3:].split('/')[0].split('?')[0] if p.startswith('/f/') else ''
                if kind == 'flaky': return self.send(500, b'oops', 'text/plain') if n == 1 else self.send(200, png_bytes((30, 30), (1, 2, 3)), 'image/png')
                if kind == 'gone500': return self.send(503, b'down', 'text/plain')
                if kind == 'html': return self.send(200, HTML, 'text/html')
                if kind == 'truncated': return self.send(200, srv.img[:len(srv.img)//2])
                if kind == 'empty': return self.send(200, b'')
                if kind == 'loop': return self.send(302, b'', 'text/plain', [('Location', p)])
                if kind == 'reset':
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    self.close_connection = True; self.connection.close(); return
                if kind == 'big': return self._big(True)
                if kind == 'bigstream': return self._big(False)
                if kind == 'stall':
                    self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
                    self.send_header('Content-Length', str(len(srv.img))); self.end_headers()
                    self.wfile.write(srv.img[:20]); self.wfile.flush(); time.sleep(srv.stall)
                    self.close_connection = True; return
                if kind == 'bomb': return self.send(200, bomb_png(), 'image/png')
                if kind == 'trickle': return self._trickle()
                if kind == 'noheaders':
                    time.sleep(srv.trickle_for); self.close_connection = True; return
                if kind in ('dupA', 'dupB'): return self.send(200, png_bytes((24, 24), (9, 9, 9)), 'image/png')
                if kind == 'ok_query': return self.send(200, png_bytes((20, 10)) if 'x=1' in p else b'no query', 'image/png')
                if kind == 'wrongtype': return self.send(200, png_bytes((12, 12)), 'text/plain')
                return self.send(404, b'not found', 'text/plain')
            def _trickle(self):
                self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
                self.send_header('Content-Length', str(len(srv.img))); self.end_headers()
                end = time.monotonic() + srv.trickle_for
                try:
                    for b in srv.img:
                        if time.monotonic() > end: break
                        self.wfile.write(bytes([b])); self.wfile.flush(); time.sleep(srv.trickle_every)
                except (BrokenPipeError, ConnectionResetError): pass
                self.close_connection = True
            def _big(self, declared):
                self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
                if declared: self.send_header('Content-Length', str(srv.big))
                else: self.send_header('Connection', 'close'); self.close_connection = True
                self.end_headers()
                block = srv.img + b'\0' * (65536 - len(srv.img))
                try:
                    for _ in range(srv.big // 65536 + 1): self.wfile.write(block); block = b'\0' * 65536
                except (BrokenPipeError, ConnectionResetError): pass
                self.close_connection = True
        self.httpd = _Server((host, 0), H)
        self.base = f'http://{host}:{self.httpd.server_address[1]}'

    def url(self, kind, i=''): return f'{self.base}/f/{kind}' + (f'/{i}' if i != '' else '')
    def img_url(self, name): return f'{self.base}/img/{name}'
    def __enter__(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True); self.thread.start(); return self
    def __exit__(self, *exc): self.httpd.shutdown(); self.httpd.server_close()


def serve_forever_in_process(files_dir, port_q, stall=3.0, hosts=('127.0.0.1',), latency=0.0):
    "Target for a multiprocessing.Process: serve `files_dir` plus faults on each loopback `hosts`; put the base URLs on `port_q`"
    files = {f.name: f.read_bytes() for f in Path(files_dir).iterdir() if f.is_file()}
    srvs = [FaultServer(files, stall=stall, host=h, latency=latency) for h in hosts]
    port_q.put([s.base for s in srvs])
    for s in srvs[1:]: threading.Thread(target=s.httpd.serve_forever, daemon=True).start()
    srvs[0].httpd.serve_forever()


def swapped_primaries_profile():
    "An RGB ICC profile: sRGB with its red and blue primaries swapped (pure red stored under it is pure blue in sRGB)"
    from PIL import ImageCms
    p = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes())
    tags = {bytes(p[132+12*i:136+12*i]): 132+12*i for i in range(struct.unpack('>I', p[128:132])[0])}
    r, b = tags[b'rXYZ'], tags[b'bXYZ']
    p[r+4:r+12], p[b+4:b+12] = p[b+4:b+12], p[r+4:r+12]
    return bytes(p).replace(b's\x00R\x00G\x00B', b'S\x00w\x00a\x00p').replace(b'sRGB', b'Swap')


def odd_images(size=(32, 24)):
    """{name: (bytes, expected RGB of pixel (0, 0) after conversion, or None when any colour is fine)}: one image per
    mode Pillow produces, saved in a web format, with its top-left pixel transparent where the mode allows it"""
    import numpy as np
    w, h = size
    def enc(im, fmt, **kw): buf = io.BytesIO(); im.save(buf, fmt, **kw); return buf.getvalue()
    def alpha(mode, colour):   # top-left pixel fully transparent, the rest opaque
        im = Image.new(mode, size, colour); px = list(colour); px[-1] = 0; im.putpixel((0, 0), tuple(px)); return im
    grey16 = np.full((h, w), 40000, np.uint16)
    out = {
        'rgb.jpg': (enc(Image.new('RGB', size, (200, 30, 30)), 'JPEG', quality=95), None),
        'l.png': (enc(Image.new('L', size, 100), 'PNG'), (100, 100, 100)),
        '1.png': (enc(Image.new('1', size, 1), 'PNG'), (255, 255, 255)),
        'p.gif': (enc(Image.new('RGB', size, (0, 0, 255)).convert('P'), 'GIF'), (0, 0, 255)),
        'rgba.png': (enc(alpha('RGBA', (10, 200, 10, 255)), 'PNG'), (255, 255, 255)),
        'la.png': (enc(alpha('LA', (30, 255)), 'PNG'), (255, 255, 255)),
        'rgba.webp': (enc(alpha('RGBA', (10, 200, 10, 255)), 'WEBP', lossless=True), None),   # re-encoded lossy: the white pixel bleeds
        'i16.png': (enc(Image.fromarray(grey16), 'PNG'), (156, 156, 156)),
        'i16b.tif': (enc(Image.fromarray(grey16.astype('>u2')), 'TIFF'), (156, 156, 156)),
        'i32.tif': (enc(Image.fromarray(np.full((h, w), 1000, np.int32)), 'TIFF'), (4, 4, 4)),
        'f.tif': (enc(Image.fromarray(np.full((h, w), 0.5, np.float32)), 'TIFF'), (128, 128, 128)),
        'cmyk.jpg': (enc(Image.new('CMYK', size, (0, 0, 0, 0)), 'JPEG', quality=95), None),
        'cmyk.tif': (enc(Image.new('CMYK', size, (0, 255, 255, 0)), 'TIFF'), (255, 0, 0)),
        'lab.tif': (enc(Image.new('LAB', size, (128, 128, 128)), 'TIFF'), (119, 119, 119)),
        'ycbcr.jpg': (enc(Image.new('RGB', size, (20, 20, 220)).convert('YCbCr'), 'JPEG', quality=95), None),
        'icc_swapped.png': (enc(Image.new('RGB', size, (255, 0, 0)), 'PNG', icc_profile=swapped_primaries_profile()), (0, 0, 255)),
        'tiny_1x1.jpg': (enc(Image.new('RGB', (1, 1), 'red'), 'JPEG'), None),
    }
    p = Image.new('P', size, 1); p.putpalette([0, 0, 0, 250, 0, 0]); p.putpixel((0, 0), 0); p.info['transparency'] = 0
    out['p_trns.png'] = (enc(p, 'PNG', transparency=0), (255, 255, 255))
    frames = [Image.new('RGB', size, c) for c in ((0, 200, 0), (200, 0, 0))]
    buf = io.BytesIO(); frames[0].save(buf, 'PNG', save_all=True, append_images=frames[1:]); out['anim.png'] = (buf.getvalue(), (0, 200, 0))
    buf = io.BytesIO(); frames[0].save(buf, 'GIF', save_all=True, append_images=frames[1:]); out['anim.gif'] = (buf.getvalue(), None)
    buf = io.BytesIO(); frames[0].save(buf, 'WEBP', save_all=True, append_images=frames[1:], lossless=True); out['anim.webp'] = (buf.getvalue(), (0, 200, 0))
    return out
