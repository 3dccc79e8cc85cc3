"""Benchmark: imgclean download_images + verify vs fastai's (fastai.vision.utils) on the same loopback URL lists.

Usage: .venv/bin/python bench/download.py [--n 1200] [--classes 4] [--runs 3]
Generates N images of varied sizes (JPEG/PNG, 64-900 px) and mixes in every fault kind per class (404, 500 then ok,
HTML with 200, truncated JPEG, empty body, redirect loop, connection reset, body over the cap, stall, bomb, duplicate
image), serves them from a separate process on 127.0.0.1, then runs both sides and prints files/s, ratios, the
files each side left in class folders that do not decode, and whether every URL appears in the manifest.
imgclean checks each image as it arrives, so its verify_images right after its download only hashes the files; the
"verify alone" and "resize+verify" lines run both verifiers on copies of fastai's download (files never seen); "verify
alone, same list" runs fastai's verify_images and ours (its list form: the same contract) on one list of files. The
"trickle list" line downloads 8 good URLs and one that trickles a byte every 0.5 s (for 30 s), both sides in fastai's
form with its defaults (timeout 4). With --runs N the whole comparison runs N times; the ratios are printed per run and
as medians (ratio = fastai's time / imgclean's: above 1, imgclean is faster)."""
import argparse, multiprocessing as mp, resource, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from _fault_helpers import serve_forever_in_process  # noqa: E402

FAULTS = ['404', 'flaky', 'html', 'truncated', 'empty', 'loop', 'reset', 'bigstream', 'stall', 'bomb', 'dupA', 'dupB']


def make_site(site, n, seed=0):
    "Write `n` images of varied sizes and formats into `site`"
    rng = np.random.default_rng(seed)
    site.mkdir(parents=True)
    for i in range(n):
        w, h = (int(x) for x in rng.integers(64, 900, 2))
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1, 3)
        arr = (base + rng.integers(0, 60, (h, 1, 3))).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(np.broadcast_to(arr, (h, w, 3)).copy())
        if i % 3 == 0: im.save(site/f'{i:05d}.png')
        else: im.save(site/f'{i:05d}.jpg', quality=85)
    return sorted(p.name for p in site.iterdir())


def over_size(root, max_size):
    "Images in the class folders of `root` whose longest side is over `max_size`"
    n = 0
    for f in root.rglob('*'):
        if not f.is_file() or f.relative_to(root).parts[0].startswith(('_', '.')): continue
        try:
            with Image.open(f) as im: n += max(im.size) > max_size
        except Exception: pass
    return n


def undecodable(root):
    "Files in the class folders of `root` that do not fully decode"
    bad = []
    for d in root.iterdir():
        if not d.is_dir() or d.name.startswith(('_', '.')): continue
        for f in d.rglob('*'):
            if not f.is_file(): continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    with Image.open(f) as im: im.load()
            except Exception: bad.append(f)
    return bad


def n_files(root): return sum(1 for d in root.iterdir() if d.is_dir() and not d.name.startswith(('_', '.')) for f in d.rglob('*') if f.is_file())


def lists_for(a, names, bases, tmp):
    "Write urls_<class>.csv lists: the served images spread over classes and hosts, each fault kind in every class"
    base = bases[0]
    classes = [f'class{i}' for i in range(a.classes)]
    lists = {c: [f'{bases[j % len(bases)]}/img/{nm}' for j, nm in enumerate(names[i::a.classes])] for i, c in enumerate(classes)}
    rng = np.random.default_rng(1)
    for c in classes:   # each fault kind in every class (a distinct URL per class), mixed in at random places
        faults = [f'{base}/f/{k}/{c}/{tmp.name}' for k in FAULTS]
        if a.faults_at_end: lists[c] += faults
        else:
            for u in faults: lists[c].insert(int(rng.integers(0, len(lists[c]) + 1)), u)
    (tmp/'urls').mkdir(parents=True)
    for c, us in lists.items(): (tmp/'urls'/f'urls_{c}.csv').write_text('\n'.join(us) + '\n')
    return classes, lists


def one_run(a, tmp, names, bases):
    "One side-by-side comparison in `tmp`; returns the ratios (fastai's time / imgclean's)"
    from fastai.vision.utils import download_images as fa_download, verify_images as fa_verify, resize_images as fa_resize
    from fastai.data.transforms import get_image_files
    from imgclean.download import download_images
    from imgclean.verify import verify_dataset, verify_images
    classes, lists = lists_for(a, names, bases, tmp)
    n_urls = sum(len(v) for v in lists.values())
    print(f"{n_urls} URLs in {a.classes} classes ({len(FAULTS)} fault URLs per class, {'at the end' if a.faults_at_end else 'mixed in'}) on {len(bases)} loopback hosts, {a.latency*1000:.0f} ms simulated latency per request")

    # fastai, as in lesson 2: download_images per class, then verify_images and unlink the failures
    fa = tmp/'fastai'; fa.mkdir()
    t0 = time.time()
    for c in classes: fa_download(fa/c, url_file=tmp/'urls'/f'urls_{c}.csv', max_pics=10**6)
    fa_dl = time.time() - t0
    fa_copy = tmp/'fastai_verify_copy'; shutil.copytree(fa, fa_copy)
    t1 = time.time(); fa_verify(get_image_files(fa)).map(Path.unlink); fa_ver = time.time() - t1
    fa_total = time.time() - t0

    # imgclean, our form: the folder of URL lists, checked on arrival; then verify_dataset (hashes what it checked)
    ours = tmp/'imgclean'
    t0 = time.time(); man = download_images(tmp/'urls', ours, progress=False, verbose=False); ic_dl = time.time() - t0
    t1 = time.time(); ver = verify_dataset(ours, progress=False, verbose=False); ic_ver = time.time() - t1
    ic_total = time.time() - t0
    print(f"imgclean manifest: {len(man)} rows; status {man.status.value_counts().to_dict()}")
    print(f"imgclean verify:   {len(ver)} files, {int((~ver.ok).sum())} quarantined")

    # verify alone, on copies of fastai's download (files never seen by imgclean)
    c1, c2, c5 = tmp/'v_fastai', tmp/'v_imgclean', tmp/'v_list'
    for c in (c1, c2, c5): shutil.copytree(fa_copy, c)
    nv = len(get_image_files(c1))
    cpu = lambda: sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for k in ('ru_utime', 'ru_stime'))
    def timed(f):
        c0, t0 = cpu(), time.time(); out = f(); return out, time.time() - t0, cpu() - c0
    sides = {'fa': lambda: timed(lambda: fa_verify(get_image_files(c1))), 'ds': lambda: timed(lambda: verify_dataset(c2, progress=False, verbose=False, manifest=False)),
             'list': lambda: timed(lambda: verify_images(get_image_files(c5), progress=False))}
    run = int(tmp.name[3:]) if tmp.name[3:].isdigit() else 0
    v = {k: sides[k]() for k in (list(sides) if run % 2 == 0 else list(sides)[::-1])}   # alternate who goes first: the machine is shared
    (_, fa_v, fa_vc), (_, ic_v, ic_vc), (ic_failed, ic_l, ic_lc) = v['fa'], v['ds'], v['list']
    # lesson 2's clean-up as the course runs it: resize_images(max_size) per class, then verify_images + unlink;
    # imgclean does both in one pass with verify_dataset(max_size)
    c3, c4 = tmp/'r_fastai', tmp/'r_imgclean'
    shutil.copytree(fa_copy, c3); shutil.copytree(fa_copy, c4)
    t0 = time.time()
    for c in classes: fa_resize(c3/c, max_size=a.max_size, dest=c3/c)
    fa_verify(get_image_files(c3)).map(Path.unlink); fa_r = time.time() - t0
    t0 = time.time(); vr = verify_dataset(c4, max_size=a.max_size, progress=False, verbose=False, manifest=False); ic_r = time.time() - t0
    ours_r = tmp/'imgclean_resized'
    t0 = time.time()
    download_images(tmp/'urls', ours_r, max_size=a.max_size, progress=False, verbose=False)
    vr2 = verify_dataset(ours_r, max_size=a.max_size, progress=False, verbose=False)
    ic_rt = time.time() - t0
    # one trickling host in a list (headers, then a byte every 0.5 s for 30 s): fastai's form and defaults on both sides
    tr = [f'{bases[0]}/img/{nm}' for nm in names[:8]] + [f'{bases[0]}/f/trickle/{tmp.name}']
    (tmp/'tr_fastai').mkdir()   # fastai's download_images makes only the last folder
    t0 = time.time(); fa_download(tmp/'tr_fastai'/'a', urls=tr); fa_t = time.time() - t0
    t0 = time.time(); trm = download_images(tmp/'tr_imgclean'/'a', urls=tr, progress=False, verbose=False); ic_t = time.time() - t0

    print()
    print(f"download files/s         imgclean {n_urls/ic_dl:8.1f}  fastai {n_urls/fa_dl:8.1f}  ratio {fa_dl/ic_dl:5.1f}x   ({n_urls} URLs; {ic_dl:.1f}s vs {fa_dl:.1f}s)")
    print(f"download+verify files/s  imgclean {n_urls/ic_total:8.1f}  fastai {n_urls/fa_total:8.1f}  ratio {fa_total/ic_total:5.1f}x   ({ic_total:.1f}s vs {fa_total:.1f}s)")
    print(f"verify alone img/s       imgclean {nv/ic_v:8.1f}  fastai {nv/fa_v:8.1f}  ratio {fa_v/ic_v:5.1f}x   (cold: files never checked, fastai's download copied; verify_dataset; {nv} files; {ic_v:.2f}s vs {fa_v:.2f}s)")
    print(f"verify alone CPU s       imgclean {ic_vc:8.2f}  fastai {fa_vc:8.2f}  ratio {fa_vc/ic_vc:5.1f}x   (CPU seconds of the process and its workers; list form: imgclean {ic_lc:.2f}s, ratio {fa_vc/ic_lc:.1f}x)")
    print(f"verify alone, same list  imgclean {nv/ic_l:8.1f}  fastai {nv/fa_v:8.1f}  ratio {fa_v/ic_l:5.1f}x   (both verify_images on the same kind of list, check only; failures found: imgclean {len(ic_failed)}; {ic_l:.2f}s vs {fa_v:.2f}s)")
    nf, nfa = len(ver), len(get_image_files(fa_copy))
    print(f"verify after download    imgclean {nf/ic_ver:8.1f}  fastai {nfa/fa_ver:8.1f}  ratio {(nf/ic_ver)/(nfa/fa_ver):5.1f}x   "
          f"(img/s, each side on its own download; imgclean checked {int(ver.reused.sum())}/{nf} on arrival and only hashes those; {ic_ver:.2f}s vs {fa_ver:.2f}s)")
    print(f"resize+verify img/s      imgclean {nv/ic_r:8.1f}  fastai {nv/fa_r:8.1f}  ratio {fa_r/ic_r:5.1f}x   (max_size {a.max_size}, as lesson 2: "
          f"fastai resize_images + verify_images; {int(vr.resized.sum())} resized; {ic_r:.2f}s vs {fa_r:.2f}s; "
          f"images over max_size left: imgclean {over_size(c4, a.max_size)} fastai {over_size(c3, a.max_size)})")
    print(f"download+resize+verify   imgclean {n_urls/ic_rt:8.1f}  fastai {n_urls/(fa_dl+fa_r):8.1f}  ratio {(fa_dl+fa_r)/ic_rt:5.1f}x   "
          f"(files/s; imgclean download_images(max_size) + verify_dataset(max_size), {int(vr2.reused.sum())}/{len(vr2)} reused; "
          f"fastai download_images + resize_images + verify_images; {ic_rt:.1f}s vs {fa_dl+fa_r:.1f}s)")
    bi, bf = undecodable(ours), undecodable(fa)
    print(f"undecodable files left in class folders  imgclean {len(bi)}  fastai {len(bf)}"
          + (f"  (fastai: {', '.join(sorted(p.name for p in bf))[:200]})" if bf else ''))
    print(f"files in class folders   imgclean {n_files(ours)}  fastai {n_files(fa)}  (good images served: {len(names)})")
    urls = {u for v in lists.values() for u in v}
    print(f"manifest complete        imgclean {set(man.url) == urls and len(man) == n_urls} ({len(man)}/{n_urls} rows)  fastai n/a (no manifest)")
    print(f"trickle list seconds     imgclean {ic_t:8.1f}  fastai {fa_t:8.1f}  ratio {fa_t/ic_t:5.1f}x   (8 good URLs + 1 trickling, fastai's form and defaults; "
          f"imgclean {int((trm.status == 'ok').sum())} ok, the trickle: '{trm.reason.iloc[-1]}')")
    return {'download': fa_dl/ic_dl, 'download+verify': fa_total/ic_total, 'verify alone (cold)': fa_v/ic_v, 'verify alone, same list': fa_v/ic_l,
            'verify alone CPU': fa_vc/ic_vc, 'verify alone, same list CPU': fa_vc/ic_lc,
            'resize+verify': fa_r/ic_r, 'download+resize+verify': (fa_dl+fa_r)/ic_rt, 'trickle list': fa_t/ic_t}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1200, help="images to generate and serve (>= 1000 for the issue's figures)")
    ap.add_argument('--classes', type=int, default=4)
    ap.add_argument('--stall', type=float, default=3.0, help="seconds the stall endpoint waits")
    ap.add_argument('--latency', type=float, default=0.05, help="simulated round trip per request in seconds (web hosts: 0.05-0.5; 0 = raw loopback)")
    ap.add_argument('--max-size', type=int, default=400, help="max_size of the resize+verify comparison (lesson 2 uses 400)")
    ap.add_argument('--faults-at-end', action='store_true', help="append the fault URLs after the images (a slow URL then starts last) instead of mixing them in")
    ap.add_argument('--hosts', type=int, default=4, help="loopback host names 127.0.0.1..N the URLs are spread over (real lists span many hosts)")
    ap.add_argument('--runs', type=int, default=1, help="repeat the whole comparison (fresh folders, same site) and print the median ratios")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_bench_'))
    try:
        t0 = time.time()
        names = make_site(tmp/'site', a.n)
        print(f"generated {len(names)} images in {time.time()-t0:.1f}s under {tmp/'site'}")
        ctx = mp.get_context('fork'); q = ctx.Queue()
        hosts = [f'127.0.0.{i+1}' for i in range(a.hosts)]
        srv = ctx.Process(target=serve_forever_in_process, args=(tmp/'site', q, a.stall, hosts, a.latency), daemon=True); srv.start()
        bases = q.get(timeout=60)
        runs = []
        for run in range(a.runs):
            print(f"\n=== run {run+1} of {a.runs} (server pid {srv.pid})")
            runs.append(one_run(a, tmp/f'run{run}', names, bases))
        if a.runs > 1:
            print(f"\n=== median ratios of {a.runs} runs (fastai's time / imgclean's)")
            for k in runs[0]: print(f"{k:26s} {statistics.median(r[k] for r in runs):6.2f}x   (runs: {', '.join(f'{r[k]:.2f}' for r in runs)})")
        srv.terminate(); srv.join(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
