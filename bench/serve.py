"""Serving load test: imgclean's batched app vs the classic one-request-one-`learn.predict` handler, same model.

Both servers run under uvicorn on 127.0.0.1 in their own process; a bounded load (`--n` POSTs of PNG images,
`--concurrency` in flight) is sent to each. Printed: req/s, p50/p99 latency, the raw batched model throughput
measured in the same run (the limit a server can reach on this machine), and their ratio (target >= 0.8).
Then `--slow-urls` requests to /classify-url of a loopback URL that trickles a byte every 0.5 s (the naive side
fetches as the lesson-2 apps do, asynchronously and without a deadline): upload latency while they hang, how many
of them are answered within 15 s, and how long the server takes to exit on SIGTERM with them hanging.
Usage: python bench/serve.py [--n 1000] [--concurrency 16] [--arch resnet34] [--size 160] [--slow-urls 40]
"""
import argparse, asyncio, atexit, io, os, shutil, socket, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
ROOT = Path(__file__).resolve().parents[1]


def naive_server(pkl, port):
    "The lesson-2 deployment: Starlette, `learn.predict` on the event loop, one request at a time"
    import uvicorn
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    import httpx
    learn = load_learner(pkl)
    def answer(data):
        _, _, probs = learn.predict(PILImage.create(io.BytesIO(data)))
        preds = sorted(zip(map(str, learn.dls.vocab), map(float, probs)), key=lambda o: -o[1])
        return JSONResponse({'predictions': preds})
    async def classify(request): return answer(await request.body())
    async def classify_url(request):   # as the lesson-2 apps' aiohttp `get_bytes(url)`: async, no deadline
        async with httpx.AsyncClient(timeout=None) as c: return answer((await c.get(request.query_params['url'])).content)
    async def health(request): return JSONResponse({'status': 'ok'})
    uvicorn.run(Starlette(routes=[Route('/classify', classify, methods=['POST']), Route('/classify-url', classify_url),
                                  Route('/health', health)]), host='127.0.0.1', port=port, log_level='warning')


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start(cmd, port):
    import httpx
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None: raise RuntimeError(f"server exited: {' '.join(cmd)}")
        try:
            if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200: return p
        except httpx.HTTPError: pass
        time.sleep(0.3)
    p.kill(); raise RuntimeError("server did not start in 120 s")


async def load(url, bodies, n, concurrency):
    "POST `n` bodies with `concurrency` in flight; returns (seconds, latencies, non-200 count)"
    import httpx
    lat, bad, nxt = [], 0, iter(range(n))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker():
            nonlocal bad
            for i in nxt:
                t = time.perf_counter()
                r = await c.post(url, content=bodies[i % len(bodies)])
                lat.append(time.perf_counter() - t); bad += r.status_code != 200
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - t0, lat, bad


def stop(p, wait=40):
    "SIGTERM `p`; seconds until it exited (killed after `wait`)"
    t = time.perf_counter(); p.terminate()
    try: p.wait(wait)
    except subprocess.TimeoutExpired: p.kill(); p.wait(10)
    return time.perf_counter() - t


async def slow_urls(base, slow_url, bodies, n, p, wait=15):
    """`n` /classify-url requests for `slow_url`, then 10 uploads one after the other; then `n` more and SIGTERM to `p`.
    Returns (upload p50 ms, slow requests answered within `wait` s, seconds to exit after SIGTERM)"""
    import httpx
    async with httpx.AsyncClient(timeout=wait, limits=httpx.Limits(max_connections=2*n + 4)) as c:
        async def slow():
            try: await c.get(f'{base}/classify-url', params={'url': slow_url}); return True
            except httpx.HTTPError: return False
        tasks = [asyncio.ensure_future(slow()) for _ in range(n)]
        await asyncio.sleep(1)
        lat = []
        for i in range(10):
            t = time.perf_counter(); await c.post(f'{base}/classify', content=bodies[i % len(bodies)]); lat.append(time.perf_counter() - t)
        answered = sum(await asyncio.gather(*tasks))
        more = [asyncio.ensure_future(slow()) for _ in range(n)]
        await asyncio.sleep(1)
        took = await asyncio.get_running_loop().run_in_executor(None, stop, p)
        await asyncio.gather(*more)
    return statistics.median(lat)*1000, answered, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1000); ap.add_argument('--concurrency', type=int, default=16)
    ap.add_argument('--arch', default='resnet34'); ap.add_argument('--size', type=int, default=160)
    ap.add_argument('--max-batch', type=int, default=16); ap.add_argument('--max-wait-ms', type=float, default=5)
    ap.add_argument('--slow-urls', type=int, default=40)
    ap.add_argument('--naive-server', nargs=2, metavar=('PKL', 'PORT'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.naive_server: return naive_server(a.naive_server[0], int(a.naive_server[1]))
    sys.path.insert(0, str(ROOT/'tests'))
    import torch
    from conftest import make_class_folders
    from imgclean.data import folder_dls
    from imgclean.export import export_learner
    from imgclean.serve import Predictor, decode_image
    from imgclean.train import make_learner
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_bench_serve_'))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    root = make_class_folders(tmp/'shapes', n=8, size=a.size)
    learn = make_learner(folder_dls(root, size=a.size, bs=8, num_workers=0), a.arch, pretrained=False)
    pkl = export_learner(learn, tmp/'export.pkl')
    files = sorted(root.rglob('*.png'))
    bodies = [f.read_bytes() for f in files]
    print(f"model {a.arch} at {a.size} px (random weights), {len(bodies)} distinct {a.size}-px PNG bodies, "
          f"{a.n} requests, concurrency {a.concurrency}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")

    # the limit: batched forward passes on preprocessed tensors, in this process, no HTTP
    pred = Predictor(pkl, max_batch=a.max_batch)
    xs = [pred.preprocess(decode_image(b)) for b in bodies]
    batch = (xs * (a.max_batch // len(xs) + 1))[:a.max_batch]
    pred.predict_batch(batch)
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < 10 or k < 3: pred.predict_batch(batch); k += 1
    raw = k * len(batch) / (time.perf_counter() - t)
    pred.close(); del pred

    from _fault_helpers import FaultServer
    trickle = FaultServer(trickle_every=0.5, trickle_for=60).__enter__()
    atexit.register(trickle.__exit__)
    results, faults = {}, {}
    for name in ('imgclean', 'naive'):
        port = free_port()
        cmd = ([str(Path(sys.executable).parent/'imgclean'), 'serve', str(pkl), '--port', str(port), '--allow-private', '--url-timeout', '5',
                '--max-batch', str(a.max_batch), '--max-wait-ms', str(a.max_wait_ms)] if name == 'imgclean'
               else [sys.executable, __file__, '--naive-server', str(pkl), str(port)])
        p = start(cmd, port)
        try:
            url = f'http://127.0.0.1:{port}/classify'
            asyncio.run(load(url, bodies, min(32, a.n), a.concurrency))   # warm-up
            secs, lat, bad = asyncio.run(load(url, bodies, a.n, a.concurrency))
            if a.slow_urls: faults[name] = asyncio.run(slow_urls(f'http://127.0.0.1:{port}', trickle.url('trickle'), bodies, a.slow_urls, p))
        finally:
            if p.poll() is None: stop(p, 10)
        lat.sort()
        results[name] = (a.n/secs, lat[len(lat)//2]*1000, lat[min(len(lat)-1, int(len(lat)*0.99))]*1000, bad)
    (ri, p50i, p99i, badi), (rn, p50n, p99n, badn) = results['imgclean'], results['naive']
    print(f"serve req/s          imgclean {ri:8.1f}  naive {rn:8.1f}  ratio {ri/rn:5.1f}x")
    print(f"latency p50 ms       imgclean {p50i:8.1f}  naive {p50n:8.1f}")
    print(f"latency p99 ms       imgclean {p99i:8.1f}  naive {p99n:8.1f}")
    print(f"non-200 answers      imgclean {badi:8d}  naive {badn:8d}")
    print(f"raw batched model    {raw:8.1f} img/s (batches of {a.max_batch}, no HTTP)   "
          f"imgclean/raw {ri/raw:.2f} (target >= 0.8)   naive/raw {rn/raw:.2f}")
    if not faults: return
    (ui, ai, si), (un, an, sn) = faults['imgclean'], faults['naive']
    print(f"with {a.slow_urls} trickling URLs (imgclean --url-timeout 5):")
    print(f"  upload p50 ms      imgclean {ui:8.1f}  naive {un:8.1f}  ratio {un/ui:5.1f}x")
    print(f"  answered in 15 s   imgclean {ai:8d}  naive {an:8d}  (of {a.slow_urls})")
    print(f"  exit after SIGTERM imgclean {si:8.1f}  naive {sn:8.1f}  ratio {sn/si:5.1f}x  (s; killed at 40)")


if __name__ == '__main__': main()
