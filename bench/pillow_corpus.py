"""Benchmark: imgclean's verify on Pillow's own test-image corpus (Tests/images, 1,067 files), against fastai's verify_images.

Usage: python bench/pillow_corpus.py PATH [--runs 3] [--max-size 400]
PATH is a copy of Pillow's Tests/images folder (e.g. from a checkout of python-pillow/Pillow). Each run copies every file
(sub-folders flattened) into two class folders, alternating, and checks that copy with
  - imgclean `verify_dataset(path, max_size)`: full decode, policy, convert, resize, quarantine;
  - imgclean `verify_images(files)` (fastai's list form, check only) and fastai's `verify_images(files)` on the same
    list (fastai's `get_image_files`), for the time ratio on identical work.
Then it prints, per file category: nothing lost (every file is in a class folder or in the quarantine), web-format
images that Pillow decodes but were quarantined for a reason that is not a stated policy (must be 0), reasons that are
not one of our sentences, kept images that fastai cannot load as RGB within max_size, and the times."""
import argparse, hashlib, io, multiprocessing as mp, re, resource, shutil, statistics, sys, tempfile, time, warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

WEB = {'JPEG', 'MPO', 'PNG', 'GIF', 'WEBP', 'BMP', 'DIB', 'TIFF', 'AVIF'}
POLICY = ('unsupported format', 'too small (', 'too many pixels (')
SENTENCES = re.compile(r"^(truncated image|empty file|cannot read \(.+\)|cannot decode \(.+\)|not an image( \(.+\))?|"
                       r"unsupported format [A-Z0-9 ]+(; pass formats=\(\.\.\., '[a-z0-9]+'\) to accept it \(or formats=None for every format Pillow reads\)"
                       r"|: Pillow cannot read it; convert it to JPEG or PNG first)|"
                       r"too small \(\d+x\d+ < min_size \d+\); pass min_size= to accept smaller images|"
                       r"too many pixels \(.+\); pass max_pixels= to accept larger images)$")


def _limit_memory(gb=4):
    "Cap a reference worker's address space: a fuzzed file that makes Pillow allocate wildly fails with MemoryError, not the OOM killer"
    resource.setrlimit(resource.RLIMIT_AS, (gb << 30, gb << 30))


def _reference_file(fn, max_pixels): return reference(Path(fn).read_bytes(), max_pixels)


def reference(data, max_pixels):
    "Pillow's own verdict on `data`: (format or None, 'decodes' | 'fails' | 'huge')"
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try: im = Image.open(io.BytesIO(data))
            except Exception: return None, 'fails'
            if im.width*im.height > max_pixels: return im.format, 'huge'
            try: im.load(); return im.format, 'decodes'
            except Exception: return im.format, 'fails'
    finally: Image.MAX_IMAGE_PIXELS = old


def timed(f, *args, **kw):
    "(f(*args, **kw), wall seconds, CPU seconds of this process and the worker processes it waited for)"
    cpu = lambda: sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for k in ('ru_utime', 'ru_stime'))
    c0, t0 = cpu(), time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t0, cpu() - c0


def lay_out(src, dest):
    "Copy every file of `src` into dest/a and dest/b alternately (names flattened); return {relative name: sha1}"
    files = sorted(p for p in src.rglob('*') if p.is_file())
    out = {}
    for i, f in enumerate(files):
        rel = f"{'ab'[i % 2]}/{f.relative_to(src).as_posix().replace('/', '__')}"
        (dest/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(f, dest/rel)
        out[rel] = hashlib.sha1(f.read_bytes()).hexdigest()
    return out


def one_run(src, tmp, max_size, run=0):
    from fastai.data.transforms import get_image_files
    from fastai.vision.utils import verify_images as fa_verify
    from imgclean.core import MAX_PIXELS
    from imgclean.verify import verify_dataset, verify_images
    ds = tmp/'ds'; shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    orig = lay_out(src, ds)
    for d in ('fa', 'ic', 'ds0'): shutil.copytree(ds, tmp/d)
    fa_files, ic_files = get_image_files(tmp/'fa'), get_image_files(tmp/'ic')
    sides = {'fa': lambda: timed(fa_verify, fa_files), 'ic': lambda: timed(verify_images, ic_files, progress=False),
             'd0': lambda: timed(verify_dataset, tmp/'ds0', progress=False, verbose=False)}
    out = {k: sides[k]() for k in (list(sides) if run % 2 == 0 else list(sides)[::-1])}   # alternate who goes first: the machine is shared
    (fa_failed, t_fa, c_fa), (ic_failed, t_ic, c_ic), (_, t_d0, c_d0) = out['fa'], out['ic'], out['d0']
    df, t_ds, c_ds = timed(verify_dataset, ds, max_size=max_size, progress=False, verbose=False)
    return dict(orig=orig, df=df, ds=ds, q=tmp/'ds_quarantine', t_fa=t_fa, t_ic=t_ic, t_ds=t_ds, t_d0=t_d0, c_fa=c_fa, c_ic=c_ic, c_d0=c_d0, c_ds=c_ds, n_list=len(fa_files),
                fa_failed=len(fa_failed), ic_failed=len(ic_failed), max_pixels=MAX_PIXELS)


def audit(r, src, max_size):
    "The figures of one run"
    from fastai.vision.core import PILImage
    df, orig = r['df'].set_index('file'), r['orig']
    in_classes = {p.relative_to(r['ds']).as_posix() for p in r['ds'].glob('[ab]/*')}
    in_q = {p.relative_to(r['q']).as_posix() for p in r['q'].glob('[ab]/*')}
    lost = set(orig) - in_classes - in_q
    moved_changed = [f for f in in_q if hashlib.sha1((r['q']/f).read_bytes()).hexdigest() != orig[f]]
    names = list(orig)
    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=_limit_memory) as ex:   # spawn: a small address space to cap
        refs = dict(zip(names, ex.map(_reference_file, [src/f[2:].replace('__', '/') for f in names], [r['max_pixels']]*len(names), chunksize=8)))
    bad = df[~df.ok]
    wrongly = [f for f in bad.index if refs[f][0] in WEB and refs[f][1] == 'decodes' and not bad.reason[f].startswith(POLICY)]
    internal = [f for f in bad.index if bad.reason[f].startswith('internal error')]
    kept_pillow_fails = [f for f in df.index[df.ok] if refs[f][1] != 'decodes']
    not_sentence = sorted({re.sub(r'\d', '0', x) for x in bad.reason if not SENTENCES.match(x)})
    fa_bad = []
    for f in df.index[df.ok]:
        try:
            im = PILImage.create(r['ds']/f)
            if im.mode != 'RGB' or (max_size and max(im.size) > max_size): fa_bad.append((f, im.mode, im.size))
        except Exception as e: fa_bad.append((f, type(e).__name__))
    policy = bad.reason.str.extract(r'^(unsupported format|too small|too many pixels)')[0].value_counts().to_dict()
    return dict(files=len(orig), kept=int(df.ok.sum()), quarantined=len(bad), lost=len(lost), moved_changed=len(moved_changed),
                web_decodable_refused_not_by_policy=len(wrongly), internal_errors=len(internal), kept_but_pillow_fails=len(kept_pillow_fails),
                reasons_not_a_sentence=len(not_sentence), fastai_cannot_load_rgb_within_max_size=len(fa_bad), policy=policy,
                examples=dict(wrongly=wrongly[:5], not_sentence=not_sentence[:5], fa_bad=fa_bad[:5], kept_pillow_fails=kept_pillow_fails[:5]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('path', type=Path, help="a copy of Pillow's Tests/images")
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--max-size', type=int, default=400)
    a = ap.parse_args()
    if not a.path.is_dir(): sys.exit(f"{a.path} is not a folder; pass a copy of Pillow's Tests/images")
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_pillow_'))
    try:
        runs = []
        for i in range(a.runs):
            r = one_run(a.path, tmp/f'run{i}', a.max_size, i)
            runs.append(r)
            print(f"run {i+1}: fastai verify_images {r['t_fa']:.2f}s ({r['fa_failed']} failed)  imgclean verify_images {r['t_ic']:.2f}s "
                  f"({r['ic_failed']} failed)  ratio {r['t_fa']/r['t_ic']:.2f}x   imgclean verify_dataset {r['t_d0']:.2f}s ({r['t_fa']/r['t_d0']:.2f}x), with max_size={a.max_size} {r['t_ds']:.2f}s "
                  f"(ratio to fastai {r['t_fa']/r['t_ds']:.2f}x)   [{r['n_list']} files by extension; verify_dataset checks all {len(r['orig'])}]")
        fig = audit(runs[-1], a.path, a.max_size)
        print()
        for k, v in fig.items():
            if k != 'examples': print(f"{k:45s} {v}")
        print(f"{'examples':45s} {fig['examples']}")
        med = lambda k: statistics.median(r[k] for r in runs)
        print(f"\nverify alone (identical file list) s   imgclean {med('t_ic'):.2f}  fastai {med('t_fa'):.2f}  ratio {med('t_fa')/med('t_ic'):.2f}x  (median of {a.runs})")
        print(f"  the same in CPU seconds              imgclean {med('c_ic'):.2f}  fastai {med('c_fa'):.2f}  ratio {med('c_fa')/med('c_ic'):.2f}x  (steadier than wall time on a shared machine)")
        print(f"verify_dataset (fix+policy+quarantine) s imgclean {med('t_d0'):.2f}  fastai {med('t_fa'):.2f}  ratio {med('t_fa')/med('t_d0'):.2f}x  (median of {a.runs}; all {len(runs[0]['orig'])} files vs fastai's {runs[0]['n_list']})")
        print(f"  the same in CPU seconds              imgclean {med('c_d0'):.2f}  fastai {med('c_fa'):.2f}  ratio {med('c_fa')/med('c_d0'):.2f}x")
        print(f"verify_dataset, max_size {a.max_size} s     imgclean {med('t_ds'):.2f}  fastai {med('t_fa'):.2f}  ratio {med('t_fa')/med('t_ds'):.2f}x  (fastai's verify does not resize)")
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
