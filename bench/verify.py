"""Benchmark: verify on files it has never seen, imgclean against fastai's verify_images, on the same files of real image folders.

Usage: .venv/bin/python bench/verify.py [--runs 3] [--pillow PATH] [--photos PATH] [--clipart N] [--generated N]
Corpora (each skipped when missing):
  --pillow PATH    Pillow's Tests/images (see bench/pillow_corpus.py for how to get a copy): every odd format and mode
  --photos PATH    a folder of photos; default /usr/share/backgrounds/mate (`apt-get install mate-backgrounds`: 16 JPEG
                   photos of 1-18 megapixels and 14 PNGs of 1-3, 9 of them transparent)
  --clipart N      N random PNGs of /usr/share/openclipart (`apt-get install openclipart-png`), most with transparency
  --generated N    N JPEG/PNG images of 64-900 px made by bench/download.py's make_site
For each corpus, each run copies the files into two class folders, a fresh copy per side, and times in alternating
order (the first side changes every run, the machine is shared):
  fastai    `verify_images(get_image_files(path))` (fastcore's `parallel`: a process per core, JPEGs at 1/8 scale)
  imgclean  `verify_dataset(path)` on the same files (decode, policy, upright RGB, duplicates, quarantine), and
            `verify_images(files)` (fastai's list form: check only);
  with --all-files, also `verify_dataset` on every file of the corpus (it checks files without an image extension too).
Wall and CPU seconds (of the process and the worker processes it waited for); ratio = fastai's / imgclean's (above 1,
imgclean is faster), per run and the median over runs."""
import argparse, random, resource, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))


def cpu():
    "CPU seconds of this process and of the children it waited for"
    return sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for k in ('ru_utime', 'ru_stime'))


def timed(f, *args, **kw):
    "(f(*args, **kw), wall seconds, CPU seconds)"
    c0, t0 = cpu(), time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t0, cpu() - c0


def lay_out(files, dest):
    "Copy `files` into dest/a and dest/b alternately (flat, numbered names keep their extensions)"
    for i, f in enumerate(files):
        d = dest/'ab'[i % 2]; d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, d/f'{i:05d}_{f.name}')
    return dest


def corpora(a, tmp):
    "{name: list of source files}"
    from fastai.data.transforms import get_image_files
    out = {}
    if a.pillow and a.pillow.is_dir():
        out['pillow'] = sorted(p for p in a.pillow.rglob('*') if p.is_file())
    if a.photos and a.photos.is_dir(): out['photos'] = sorted(get_image_files(a.photos))
    clip = Path('/usr/share/openclipart')
    if a.clipart and clip.is_dir():
        fs = sorted(clip.rglob('*.png')); random.Random(0).shuffle(fs); out['clipart'] = fs[:a.clipart]
    if a.generated:
        from download import make_site
        make_site(tmp/'site', a.generated); out['generated'] = sorted((tmp/'site').iterdir())
    return out


def one_run(name, files, tmp, i, all_files):
    "Time both sides on fresh copies of `files`, fastai first in even runs; {side: (wall, cpu, failures)}"
    from fastai.data.transforms import get_image_files
    from fastai.vision.utils import verify_images as fa_verify
    from imgclean.verify import verify_dataset, verify_images
    src = lay_out(files, tmp/f'{name}_src')
    same = tmp/f'{name}_same'; shutil.copytree(src, same)
    keep = set(get_image_files(same))
    for f in [p for p in same.rglob('*') if p.is_file() and p not in keep]: f.unlink()   # only the files fastai checks
    copies = {k: tmp/f'{name}_{k}' for k in ('fastai', 'dataset', 'list', 'all')}
    for k, d in copies.items(): shutil.copytree(src if k == 'all' else same, d)
    sides = {'fastai': lambda: len(fa_verify(get_image_files(copies['fastai']))),
             'dataset': lambda: int((~verify_dataset(copies['dataset'], progress=False, verbose=False).ok).sum()),
             'list': lambda: len(verify_images(get_image_files(copies['list']), progress=False))}
    if all_files: sides['all'] = lambda: int((~verify_dataset(copies['all'], progress=False, verbose=False).ok).sum())
    order = list(sides) if i % 2 == 0 else list(sides)[::-1]
    res = {}
    for k in order:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            n, wall, c = timed(sides[k])
        res[k] = (wall, c, n)
    res['n'], res['n_all'] = len(keep), len(files)
    shutil.rmtree(tmp/f'{name}_src'); shutil.rmtree(same)
    for d in copies.values(): shutil.rmtree(d, ignore_errors=True); shutil.rmtree(d.parent/f'{d.name}_quarantine', ignore_errors=True)
    return res


LABELS = {'dataset': 'verify_dataset, same files', 'list': 'verify_images(list), same files', 'all': 'verify_dataset, every file'}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--pillow', type=Path, default=None, help="a copy of Pillow's Tests/images")
    ap.add_argument('--photos', type=Path, default=Path('/usr/share/backgrounds/mate'))
    ap.add_argument('--clipart', type=int, default=800, help='openclipart PNGs to use (0: none)')
    ap.add_argument('--generated', type=int, default=1200, help="bench/download.py's generated images (0: none)")
    ap.add_argument('--all-files', action='store_true', help='also time verify_dataset on every file (not only those with an image extension)')
    a = ap.parse_args()
    import fastai.vision.utils, imgclean.verify  # noqa: F401  (imported before any timing)
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_bench_verify_'))
    try:
        for name, files in corpora(a, tmp).items():
            runs = []
            for i in range(a.runs):
                r = one_run(name, files, tmp, i, a.all_files); runs.append(r)
                fa = r['fastai']
                print(f"{name} run {i+1} ({'fastai' if i % 2 == 0 else 'imgclean'} first): fastai {fa[0]:.2f}s wall {fa[1]:.2f}s CPU ({fa[2]} failed of {r['n']})  " +
                      '  '.join(f"{k} {r[k][0]:.2f}s/{r[k][1]:.2f}s ({r[k][2]} failed) {fa[0]/r[k][0]:.2f}x/{fa[1]/r[k][1]:.2f}x" for k in LABELS if k in r), flush=True)
            for k, label in LABELS.items():
                if k not in runs[0]: continue
                w = [r['fastai'][0]/r[k][0] for r in runs]; c = [r['fastai'][1]/r[k][1] for r in runs]
                n = runs[0]['n_all'] if k == 'all' else runs[0]['n']
                print(f"{name:10s} {label:32s} wall ratio {statistics.median(w):.2f}x  CPU ratio {statistics.median(c):.2f}x  "
                      f"(median of {a.runs}: wall {', '.join(f'{x:.2f}' for x in w)}; CPU {', '.join(f'{x:.2f}' for x in c)}; {n} files)", flush=True)
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
