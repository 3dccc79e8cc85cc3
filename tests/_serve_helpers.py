"A tiny exported model and a loopback image server with redirects, for the serve tests (built once per session)."
import functools, http.server, io, json, subprocess, sys, tempfile, threading, time, urllib.parse, urllib.request, warnings
from pathlib import Path

from _export_helpers import tiny_learner


@functools.lru_cache(maxsize=None)
def tiny_export():
    "(path of an export.pkl of a tiny resnet18 on 3 shape classes, its learner)"
    from imgclean.export import export_learner
    learn, root, _ = tiny_learner()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return export_learner(learn, Path(root)/'export.pkl'), learn


def png_bytes(shape='circle', size=48, seed=0, fmt='PNG'):
    from imgclean.datasets import draw_shape
    buf = io.BytesIO(); draw_shape(shape, size, seed=seed).save(buf, fmt); return buf.getvalue()


class ImageSite:
    "Loopback HTTP server: /img.png, /page (HTML), /big and /big-nolength (over a small cap), /to/<target> (302 to target URL), /loop"
    def __init__(self):
        site = self
        self.png, self.hits = png_bytes(), 0
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.hits += 1
                if self.path == '/img.png': return self._send(200, site.png, 'image/png')
                if self.path == '/page': return self._send(200, b'<html>not an image</html>', 'text/html')
                if self.path == '/big': return self._send(200, site.png + b'\0' * 200_000, 'image/png')
                if self.path == '/big-nolength':   # no Content-Length: only the streaming cap can stop it
                    self.send_response(200); self.send_header('Content-Type', 'image/png'); self.end_headers()
                    self.wfile.write(site.png + b'\0' * 200_000); return
                if self.path == '/loop': return self._redirect('/loop')
                if self.path.startswith('/to/'): return self._redirect(urllib.parse.unquote(self.path[4:]))   # urllib3 sends [::1] as %5B::1%5D
                self._send(404, b'missing', 'text/plain')
            def _send(self, code, body, ctype):
                self.send_response(code); self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
            def _redirect(self, to):
                self.send_response(302); self.send_header('Location', to); self.send_header('Content-Length', '0'); self.end_headers()
            def log_message(self, *a): pass
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    def __enter__(self): threading.Thread(target=self.httpd.serve_forever, daemon=True).start(); return self
    def __exit__(self, *exc): self.httpd.shutdown(); self.httpd.server_close()


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read())


class CliServer:
    "`imgclean serve <pkl> --port <port> *flags` in a subprocess (log in a temp file); waits for /health, stops on exit"
    def __init__(self, pkl, port, *flags, wait=90):
        self.cmd = [str(Path(sys.executable).parent/'imgclean'), 'serve', str(pkl), '--port', str(port), *map(str, flags)]
        self.base, self.wait = f'http://127.0.0.1:{port}', wait
    def log(self): self.out.seek(0); return self.out.read().decode(errors='replace')[-2000:]
    def __enter__(self):
        self.out = tempfile.TemporaryFile()   # a pipe nobody reads would block the server once full
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.wait
        while True:
            if self.proc.poll() is not None: raise AssertionError(f"imgclean serve exited: {self.log()}")
            try:
                if get_json(f'{self.base}/health', timeout=1)['status'] == 'ok': return self
            except OSError: pass
            if time.monotonic() > deadline:
                self.__exit__(); raise AssertionError(f"imgclean serve did not answer /health within {self.wait} s: {self.log()}")
            time.sleep(0.3)
    def __exit__(self, *exc):
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(10)
        self.out.close()


def app_client(**kw):
    "A Starlette TestClient on `make_app(tiny_export(), **kw)` (use it as a context manager: lifespan and one event loop)"
    from starlette.testclient import TestClient
    from imgclean.serve import make_app
    pkl, _ = tiny_export()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return TestClient(make_app(pkl, **kw))


def solid_png(w, h):
    "A PNG of one colour: a few KB on disk, `w`*`h`*3 bytes once decoded"
    from PIL import Image
    buf = io.BytesIO(); Image.new('RGB', (w, h), (90, 140, 200)).save(buf, 'PNG'); return buf.getvalue()


async def post_in_chunks(app, chunks, content_type, path='/classify'):
    """POST the `chunks` (an iterable of bytes) to the ASGI `app` as a body without Content-Length, one chunk per
    `receive`; returns (status, JSON body, bytes the app had taken when it answered)"""
    it, taken, out = iter(chunks), 0, {}
    async def receive():
        nonlocal taken
        c = next(it, None)
        if c is None: return {'type': 'http.request', 'body': b'', 'more_body': False}
        taken += len(c); return {'type': 'http.request', 'body': c, 'more_body': True}
    async def send(m):
        if m['type'] == 'http.response.start': out.setdefault('status', m['status']); out.setdefault('taken', taken)
        elif m['type'] == 'http.response.body': out['body'] = out.get('body', b'') + m.get('body', b'')
    scope = dict(type='http', asgi={'version': '3.0'}, http_version='1.1', method='POST', scheme='http', path=path, raw_path=path.encode(),
                 root_path='', query_string=b'', headers=[(b'content-type', content_type.encode()), (b'transfer-encoding', b'chunked')],
                 server=('127.0.0.1', 80), client=('127.0.0.1', 5000))
    await app(scope, receive, send)
    return out['status'], json.loads(out['body']), out['taken']
