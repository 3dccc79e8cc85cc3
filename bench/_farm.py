"""A loopback web of many hosts for bench/scale.py: one asyncio process answers on 127.1.X.Y:PORT for every host.

Every host serves a pool of images at /i/<n>.jpg (each <n> made distinct by a comment, so no two URLs give the same bytes) (after `latency` seconds) and the fault kinds at /f/<kind>/<n>:
404, 500 (always), html (a 200 page), truncated (half a JPEG), empty (a 200 with no body), reset (connection reset),
stall (headers, part of the body, then `stall` seconds of silence), trickle (one byte every 0.5 s for `stall` seconds),
bomb (a small PNG claiming 30000x30000 pixels), big (a 40 MB body). Every fault is bounded in time."""
import asyncio, io, struct, zlib

import numpy as np
from PIL import Image


def host_ip(i:int)->str:
    "Loopback address of host number `i` (127.1.0.1, 127.1.0.2, ...; every 127.x.y.z is loopback on Linux)"
    return f'127.1.{i // 250}.{i % 250 + 1}'


def image_pool(n:int=200, seed:int=0)->list:
    "`n` JPEG/PNG byte strings of photo-like noise and gradients, 96-640 px"
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        w, h = (int(x) for x in rng.integers(96, 640, 2))
        g = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(60, 200, 3)
        a = (g + rng.normal(0, 25, (h, w, 3)) + rng.uniform(0, 55, 3)).clip(0, 255).astype(np.uint8)
        b = io.BytesIO(); Image.fromarray(a).save(b, 'PNG' if i % 4 == 0 else 'JPEG', quality=85); out.append(b.getvalue())
    return out


def bomb_png(w=30000, h=30000):
    "A PNG of a few hundred bytes whose header claims `w`x`h` pixels (valid zlib stream of zero rows)"
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    z = zlib.compressobj(9); row = b'\x00' * (1 + w*3)
    idat = b''.join(z.compress(row) for _ in range(64)) + z.flush()
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


def unique(body:bytes, n:int)->bytes:
    "`body` (a JPEG or PNG) made distinct for image number `n` by a comment (JPEG COM segment, PNG tEXt chunk); pixels unchanged"
    tag = f'image {n}'.encode()
    if body[:2] == b'\xff\xd8': return body[:2] + b'\xff\xfe' + struct.pack('>H', len(tag) + 2) + tag + body[2:]
    t = b'tEXt' + b'n\x00' + tag
    chunk = struct.pack('>I', len(t) - 4) + t + struct.pack('>I', zlib.crc32(t) & 0xffffffff)
    return body[:33] + chunk + body[33:]   # after the signature and IHDR


def _head(code, ctype, n):
    reason = {200: 'OK', 404: 'Not Found', 500: 'Internal Server Error'}[code]
    return f'HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\n\r\n'.encode()


class Farm:
    "The request handler shared by every host's listening socket"
    def __init__(self, pool, latency=0.02, stall=3.0):
        self.pool, self.latency, self.stall, self.bomb = pool, latency, stall, bomb_png()
        self.hits = 0

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b'\r\n\r\n')
                path = head.split(b' ', 2)[1].decode()
                self.hits += 1
                if self.latency: await asyncio.sleep(self.latency)
                if not await self.answer(path, writer): break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError): pass
        finally:
            try: writer.close()
            except Exception: pass

    async def answer(self, path, w)->bool:
        "Write the answer to `path`; False when the connection must close"
        parts = path.strip('/').split('/')
        if parts[0] == 'i':
            n = int(parts[1].split('.')[0]); body = unique(self.pool[n % len(self.pool)], n)   # every URL a distinct file
            w.write(_head(200, 'image/jpeg', len(body)) + body); await w.drain(); return True
        kind = parts[1] if len(parts) > 1 else ''
        if kind in ('404', '500'): w.write(_head(int(kind), 'text/plain', 4) + b'nope'); await w.drain(); return True
        if kind == 'html':
            b = b'<!doctype html><title>moved</title>'; w.write(_head(200, 'text/html', len(b)) + b); await w.drain(); return True
        if kind == 'truncated':
            b = self.pool[1]; w.write(_head(200, 'image/jpeg', len(b)//2) + b[:len(b)//2]); await w.drain(); return True
        if kind == 'empty': w.write(_head(200, 'image/jpeg', 0)); await w.drain(); return True
        if kind == 'bomb': w.write(_head(200, 'image/png', len(self.bomb)) + self.bomb); await w.drain(); return True
        if kind == 'reset':
            sock = w.get_extra_info('socket'); sock.setsockopt(1, 13, struct.pack('ii', 1, 0)); return False   # SO_LINGER 0: RST
        if kind in ('stall', 'trickle'): return await self.slow(kind, w)
        if kind == 'big':
            n = 40_000_000; w.write(_head(200, 'image/jpeg', n) + self.pool[1])
            for _ in range(n // 65536): w.write(b'\0' * 65536); await w.drain()
            return False
        w.write(_head(404, 'text/plain', 4) + b'nope'); await w.drain(); return True

    async def slow(self, kind, w)->bool:
        b = self.pool[1]; w.write(_head(200, 'image/jpeg', len(b))); await w.drain()
        if kind == 'stall': w.write(b[:20]); await w.drain(); await asyncio.sleep(self.stall); return False
        for i in range(int(self.stall / 0.5)):
            w.write(b[i:i+1]); await w.drain(); await asyncio.sleep(0.5)
        return False


async def _serve(n_hosts, port, farm, ready):
    servers = [await asyncio.start_server(farm.handle, host_ip(i), port, backlog=1024, reuse_address=True) for i in range(n_hosts)]
    ready.put(port)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def run_farm(n_hosts, port, latency, stall, ready, seed=0):
    "Process target: serve `n_hosts` hosts on `port`, then put `port` on the `ready` queue"
    asyncio.run(_serve(n_hosts, port, Farm(image_pool(seed=seed), latency, stall), ready))
