"""Benchmark: downloading a large URL list spread over many hosts: imgclean local, imgclean on a local Ray cluster, img2dataset.

Usage: .venv/bin/python bench/scale.py [--urls 100000] [--hosts 500] [--latency 0.02] [--repeat 1] [--sides ours,threads,unverified,ray,img2dataset,img2dataset_resize]
Sides: ours = `download_images` as it is called by default (verify on arrival; one download process per core), threads = the
same in one process (`processes=1`, the default before 2026-12-02), unverified = ours with `verify=False`, ray = `engine='ray'`,
img2dataset = bytes written as received (`--resize_mode no --disable_all_reencoding True`), img2dataset_resize = its default
image handling (every image decoded, resized into 256x256 with a border, re-encoded as JPEG q95).
A farm process serves every host on 127.1.X.Y (all loopback on Linux) with `latency` seconds per request and the
fault kinds mixed in (404, 500, HTML pages, truncated JPEGs, empty bodies, resets, stalls, trickles, 40 MB bodies,
decompression bombs; see bench/_farm.py). Each side runs in its own process (its peak memory is that process tree's)
with the same total concurrency and at most `--per-host` connections to one host (img2dataset has no per-host limit:
only its total, `processes_count` x `thread_count`, is the same). img2dataset is not a dependency:
it runs from its own venv (`--img2dataset /path/to/img2dataset`; `python3 -m venv /work/benchenv &&
/work/benchenv/bin/pip install img2dataset`: it pins pandas<3), under a 12 GB address-space limit so that a
decompression bomb cannot take the machine down. Prints URLs/s, peak memory, files kept, junk kept (kept files that
do not decode as images), manifest completeness, and the ratios."""
import argparse, json, multiprocessing as mp, os, resource, shutil, socket, subprocess, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _farm import host_ip, run_farm  # noqa: E402

FAULTS = ['404', '500', 'html', 'truncated', 'empty', 'reset', 'stall', 'trickle', 'big', 'bomb']


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def write_lists(folder, n_urls, n_hosts, port, classes=10, fault_every=40, seed=0):
    "urls_c<k>.csv files: `n_urls` URLs over `n_hosts` hosts, one in `fault_every` a fault; returns {url: kind}"
    rng = np.random.default_rng(seed); folder.mkdir(parents=True, exist_ok=True)
    kinds, lists = {}, {f'c{k}': [] for k in range(classes)}
    for i in range(n_urls):
        h = host_ip(int(rng.integers(n_hosts)))
        kind = FAULTS[(i // fault_every) % len(FAULTS)] if i % fault_every == fault_every - 1 else 'ok'
        u = f'http://{h}:{port}/i/{i}.jpg' if kind == 'ok' else f'http://{h}:{port}/f/{kind}/{i}'
        kinds[u] = kind; lists[f'c{i % classes}'].append(u)
    for c, us in lists.items(): (folder/f'urls_{c}.csv').write_text('\n'.join(us) + '\n')
    return kinds


def junk(root):
    "Kept image files under `root` (class folders) that do not decode, and the number kept"
    bad = n = 0
    for f in Path(root).rglob('*'):
        if not f.is_file() or f.suffix.lower() not in ('.jpg', '.jpeg', '.png', '.webp', '.gif', '.bmp'): continue
        if any(p.startswith(('_', '.')) for p in f.relative_to(root).parts): continue
        n += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore'); Image.MAX_IMAGE_PIXELS = None
                with Image.open(f) as im: im.draft('RGB', (64, 64)); im.load()
        except Exception: bad += 1
    return bad, n


def _tree_rss(proc):
    "Resident memory of `proc` and all its descendants, in MB (shared pages counted in each process)"
    total = 0
    for q in [proc, *proc.children(recursive=True)]:
        try: total += q.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return total / 2**20


def run_timed(cmd, env=None, limit_gb=None):
    "Run `cmd`; return (seconds, peak RSS summed over its process tree in MB, exit code, stderr tail)"
    def pre():
        if limit_gb: resource.setrlimit(resource.RLIMIT_AS, (limit_gb << 30, limit_gb << 30))
    t0, peak = time.monotonic(), 0.0
    with tempfile.TemporaryFile('w+') as err:
        p = subprocess.Popen(cmd, env=env, preexec_fn=pre, stdout=subprocess.DEVNULL, stderr=err, text=True)
        ps = psutil.Process(p.pid)
        while p.poll() is None:
            peak = max(peak, _tree_rss(ps)); time.sleep(0.5)
        secs = time.monotonic() - t0
        err.seek(0); tail = err.read()[-2000:]
    return secs, peak, p.returncode, tail


OURS = """import sys, json, time
from imgclean.download import download_images
kw = json.loads(sys.argv[3])
df = download_images(sys.argv[1], sys.argv[2], progress=False, verbose=False, **kw)
print(json.dumps(dict(rows=len(df), ok=int((df.status == 'ok').sum()))))
"""


def side_ours(lists, out, a, engine=None, verify=True, processes=None):
    kw = dict(n_workers=a.workers, per_host=a.per_host, timeout=4, max_size=None, retries=0, verify=verify, processes=processes)
    if engine: kw['engine'] = engine
    secs, peak, code, err = run_timed([sys.executable, '-c', OURS, str(lists), str(out), json.dumps(kw)],
                                      env={**os.environ, 'PYTHONPATH': str(ROOT)})
    man = out/'manifest.csv'
    rows = sum(1 for _ in open(man)) - 1 if man.is_file() else 0
    return dict(secs=secs, peak=peak, code=code, manifest_rows=rows, err=err if code else '')


def side_img2dataset(lists, out, a, resize=False):
    urls = out.parent/'i2d_urls.txt'
    urls.write_text(''.join(f.read_text() for f in sorted(lists.glob('urls_*.csv'))))
    cmd = [a.img2dataset, '--url_list', str(urls), '--input_format', 'txt', '--output_folder', str(out),
           '--output_format', 'files', '--processes_count', '2',
           '--thread_count', str(a.workers // 2), '--timeout', '4', '--retries', '0',
           '--enable_wandb', 'False', '--number_sample_per_shard', '10000', '--distributor', 'multiprocessing']
    cmd += ['--resize_mode', 'border', '--image_size', '256'] if resize else ['--resize_mode', 'no', '--disable_all_reencoding', 'True']
    secs, peak, code, err = run_timed(cmd, limit_gb=12)
    stats = list(out.glob('*_stats.json'))
    rows = sum(json.loads(s.read_text()).get('count', 0) for s in stats)
    return dict(secs=secs, peak=peak, code=code, manifest_rows=rows, err=err if code else '')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--urls', type=int, default=100_000); p.add_argument('--hosts', type=int, default=500)
    p.add_argument('--latency', type=float, default=0.02); p.add_argument('--stall', type=float, default=3.0)
    p.add_argument('--workers', type=int, default=64); p.add_argument('--per-host', type=int, default=8)
    p.add_argument('--sides', default='ours,threads,unverified,ray,img2dataset,img2dataset_resize')
    p.add_argument('--img2dataset', default='/work/benchenv/bin/img2dataset')
    p.add_argument('--repeat', type=int, default=1, help='rounds of all sides, alternating; medians are printed')
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_scale_'))
    port, q = free_port(), mp.Queue()
    farm = mp.Process(target=run_farm, args=(a.hosts, port, a.latency, a.stall, q), daemon=True); farm.start()
    try:
        q.get(timeout=120)
        kinds = write_lists(tmp/'urls', a.urls, a.hosts, port)
        n_ok = sum(k == 'ok' for k in kinds.values())
        print(f"{a.urls} URLs over {a.hosts} hosts ({n_ok} images, {a.urls - n_ok} faults), {a.latency*1000:.0f} ms latency, "
              f"{a.workers} connections, at most {a.per_host} per host; 2 cores")
        res = {}   # side: one result a round
        for rnd in range(a.repeat):   # the sides alternate round by round: a slow spell of this shared machine hits all of them
            for side in a.sides.split(','):
                out, load0 = tmp/side, os.getloadavg()[0]
                if side.startswith('img2dataset'): r = side_img2dataset(tmp/'urls', out, a, resize=side == 'img2dataset_resize')
                else: r = side_ours(tmp/'urls', out, a, 'ray' if side == 'ray' else None, verify=side != 'unverified', processes=1 if side == 'threads' else None)
                r['junk'], r['kept'], r['load0'] = *junk(out), load0
                res.setdefault(side, []).append(r)
                print(f"{side:18s} {a.urls/r['secs']:8.1f} URLs/s  {r['secs']:7.1f} s  peak {r['peak']:7.0f} MB  kept {r['kept']:6d}  "
                      f"junk kept {r['junk']:4d}  manifest {r['manifest_rows']}/{a.urls}  exit {r['code']}  load {r['load0']:.1f}-{os.getloadavg()[0]:.1f}"
                      + (f"  (round {rnd + 1})" if a.repeat > 1 else '') + (f"\n    {r['err'][-400:]}" if r['err'] else ''), flush=True)
                shutil.rmtree(out, ignore_errors=True)
        if a.repeat > 1:
            for side, rs in res.items(): print(f"median {side:18s} {a.urls/np.median([r['secs'] for r in rs]):8.1f} URLs/s over {len(rs)} runs")
        for b in ('img2dataset', 'img2dataset_resize'):
            for side, rs in res.items():
                if b not in res or side.startswith('img2dataset'): continue
                ratios = [rb['secs']/r['secs'] for rb, r in zip(res[b], rs)]   # each round's ratio, then their median
                print(f"ratio URLs/s {side} / {b}: {np.median(ratios):.2f}x" + (f" (median of rounds: {', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ''))
    finally:
        farm.terminate(); shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
