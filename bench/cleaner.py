"""The cleaner on a large dataset: time to open, turn a page and click, for this checkout and (side by side, in turn) another one.

    .venv/bin/python bench/cleaner.py --n 20000 [--other /path/to/an/older/checkout] [--repeat 2]

Builds N small drawn images in 10 class folders once (in --data), an audit-style issues table from the quality check,
then in a fresh process per side: ImageCleaner(path, issues=..., mode='all'), two page turns forward and one back, a
delete, an undelete, a relabel and a keep. Prints the median time of each step per side and the ratio."""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

STEPS = """
import json, sys, time, warnings
from pathlib import Path
ds = Path(sys.argv[1]); out = {}
for fn in ('cleaned.csv', '.imgclean_cleaner.json'): (ds/fn).unlink(missing_ok=True)
from imgclean.widgets import ImageCleaner
def t(name, f, *a):
    s = time.perf_counter(); f(*a); out[name] = time.perf_counter() - s
warnings.simplefilter('ignore')
box = {}
t('open', lambda: box.setdefault('c', ImageCleaner(ds, issues=ds/'issues.csv', mode='all')))
c = box['c']
import imgclean; assert Path(imgclean.__file__).parent.parent.resolve() == Path(sys.argv[2]).resolve(), imgclean.__file__
t('next page', c.next.click); t('next page again', c.next.click); t('previous page', c.prev.click)
a, b, k = c.order[:3]
other = next(v for v in c.state.vocab if v != c.state.label_of[b])
t('delete', c.delete, a); t('undelete', c.delete, a, False); t('relabel', c.relabel, b, other); t('keep', c.keep, k)
print(json.dumps(out))
"""

def build(ds:Path, n:int):
    "N drawn 32-48 px images over 10 classes and the quality check's issues table (once)"
    if (ds/'issues.csv').exists() and sum(1 for _ in ds.glob('*/*.png')) == n: return
    sys.path.insert(0, str(HERE))
    from imgclean.datasets import draw_shape
    from imgclean.audit import audit
    shapes = ('circle', 'square', 'triangle', 'star')
    for i in range(n):
        c = f'class{i % 10}'; (ds/c).mkdir(parents=True, exist_ok=True)
        draw_shape(shapes[i % 4], 32 + i % 17, seed=i).save(ds/c/f'{i:06d}.png')
    audit(ds, checks=('quality',), progress=True)

def run(src:Path, ds:Path)->dict:
    env = {**os.environ, 'PYTHONPATH': str(src)}
    r = subprocess.run([sys.executable, '-c', STEPS, str(ds), str(src)], env=env, cwd=src, capture_output=True, text=True, timeout=3600)   # cwd: `-c` puts it first on sys.path
    if r.returncode: raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=20000); p.add_argument('--data', default='/tmp/imgclean-bench-cleaner')
    p.add_argument('--other', help='another checkout (its folder holding imgclean/) to run side by side')
    p.add_argument('--repeat', type=int, default=1)
    a = p.parse_args()
    ds = Path(a.data)/str(a.n); build(ds, a.n)
    sides = {'this checkout': HERE, **({'other': Path(a.other)} if a.other else {})}
    got = {s: [] for s in sides}
    for _ in range(a.repeat):
        for s, src in sides.items(): got[s].append(run(src, ds)); print(s, {k: round(v, 3) for k, v in got[s][-1].items()}, flush=True)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in got.items()}
    print(f"\n{a.n} images, load average {os.getloadavg()[0]:.1f}; median of {a.repeat} run(s), seconds")
    print(f"{'step':18s}" + ''.join(f"{s:>16s}" for s in sides) + ('   other / this' if a.other else ''))
    for k in med['this checkout']:
        row = f"{k:18s}" + ''.join(f"{med[s][k]:16.3f}" for s in sides)
        if a.other: row += f"   {med['other'][k] / med['this checkout'][k]:.1f}x"
        print(row)

if __name__ == '__main__': main()
