"""Audit benchmark: imgclean vs fastai's way on generated data with injected label noise and near duplicates.
Usage: python bench/audit.py [--n-per-class 60] [--size 48] [--epochs 3] [--scale 200000] [--skip-train]
       python bench/audit.py --scale 1000000 --skip-train   # the 1M×512 top-k figure (minutes)
No pretrained weights can be downloaded here: backbones are resnet18 from random init, and, standing in for ImageNet weights
(which know lesson 2's bears), resnet18 pretrained on clean images of the same classes from another draw of the generator."""
import argparse, atexit, json, resource, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np

p = argparse.ArgumentParser()
p.add_argument('--n-per-class', type=int, default=60); p.add_argument('--size', type=int, default=48)
p.add_argument('--epochs', type=int, default=3, help='unfrozen epochs of the fastai learner (after 1 frozen epoch)')
p.add_argument('--frozen-epochs', type=int, default=3, help='frozen-phase epochs, same for fastai and imgclean')
p.add_argument('--frozen-n-per-class', type=int, default=300, help='images per class of the frozen-phase comparison set')
p.add_argument('--pretrain-epochs', type=int, default=5, help='epochs of the in-domain pretraining that stands in for ImageNet weights (0: skip)')
p.add_argument('--pretrain-n-per-class', type=int, default=300, help='clean images per class for that pretraining')
p.add_argument('--frozen-seeds', type=int, default=3, help='initialisations the frozen-phase figures are averaged over')
p.add_argument('--thorough-k', type=int, default=2, help='learners of the thorough path (2 x (1+3) epochs on half the data each: the image-epochs of 3 x (1+1) on two thirds)')
p.add_argument('--thorough-epochs', type=int, default=None, help="unfrozen epochs per thorough learner (after 1 frozen); default: the fastai learner's")
p.add_argument('--fit-epochs', type=int, default=12, help='a second random-init run with both sides trained this long, until the learner fits (memorises) its training data; 0 skips')
p.add_argument('--scale', type=int, default=200000, help='N for the top-k scale run (1000000 for the 1M figure)')
p.add_argument('--nprobe', type=int, default=8)
p.add_argument('--skip-train', action='store_true', help='only duplicates and scale')
p.add_argument('--scale-worker', nargs=2, metavar=('N', 'METHOD'), help=argparse.SUPPRESS)
args = p.parse_args()


def synth(n, d=512, seed=0):
    "n×d float32 unit vectors in n/1000 clusters, generated and normalised in place chunk by chunk (no 2nd copy)"
    rng = np.random.default_rng(seed); x = np.empty((n, d), np.float32)
    c = rng.standard_normal((max(1, n//1000), d), dtype=np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s); ch = x[s:s+m]
        ch[:] = c[rng.integers(0, len(c), m)]; ch += rng.standard_normal((m, d), dtype=np.float32)
        ch /= np.linalg.norm(ch, axis=1, keepdims=True)
    return x


def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024


if args.scale_worker:   # one measurement in a fresh process, so ru_maxrss is this run's peak
    import faiss
    faiss.omp_set_num_threads(2)
    from imgclean.audit import topk_neighbours
    n, method = int(args.scale_worker[0]), args.scale_worker[1]
    x = synth(n); base = rss_mb(); t = time.time()
    if method == 'nxn':
        S = x @ x.T; np.fill_diagonal(S, -np.inf); I = np.argpartition(-S, 10, axis=1)[:, :10]; extra = S.nbytes >> 20; del S
    else:
        _, I = topk_neighbours(x, 10, approx=method == 'ivf', nprobe=args.nprobe); extra = 0
    sec = time.time() - t; peak = rss_mb()
    rec = None
    if method == 'ivf':   # recall@10 of the approximate search vs exact search on 1,000 sampled rows
        q = np.random.default_rng(1).choice(n, 1000, replace=False); hits = 0
        for s in range(0, 1000, 100):
            S = x[q[s:s+100]] @ x.T; S[np.arange(len(S)), q[s:s+100]] = -np.inf
            ex = np.argpartition(-S, 10, axis=1)[:, :10]
            hits += sum(len(set(a) & set(b)) for a, b in zip(ex, I[q[s:s+100]]))
        rec = hits/10000
    print(json.dumps(dict(n=n, method=method, seconds=sec, peak_mb=peak, data_mb=base, matrix_mb=extra, recall=rec)))
    sys.exit()


def scale_run(n, method):
    out = subprocess.run([sys.executable, __file__, '--scale-worker', str(n), method, '--nprobe', str(args.nprobe)],
                         capture_output=True, text=True)
    if out.returncode: return dict(n=n, method=method, error=out.stderr.strip().splitlines()[-1:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- scale first, before torch/fastai are imported: a child inherits the parent's ru_maxrss, so keep the parent small
for n in (5000, 20000):
    a, b = scale_run(n, 'exact'), scale_run(n, 'nxn')
    print(f"scale N={n}: top-10 exact faiss {a['seconds']:.1f}s peak RSS {a['peak_mb']:.0f} MB | N×N matrix + argpartition "
          f"{b['seconds']:.1f}s peak RSS {b['peak_mb']:.0f} MB (matrix {b['matrix_mb']} MB)", flush=True)
r = scale_run(args.scale, 'ivf')
if 'error' in r: print(f"scale N={args.scale}: failed {r['error']}")
else:
    print(f"scale N={args.scale}: top-10 faiss IVF-SQ8 nprobe {args.nprobe} + exact re-rank {r['seconds']:.0f}s ({r['seconds']/60:.1f} min), "
          f"peak RSS {r['peak_mb']:.0f} MB (input alone {r['data_mb']:.0f} MB), recall@10 vs exact on 1,000 rows {r['recall']:.3f} | "
          f"N×N would need {4*args.scale**2/2**30:.0f} GB for the float32 matrix alone", flush=True)


import torch  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from _audit_helpers import make_noisy_dataset, shape_colour_feats  # noqa: E402
from fastai.interpret import ClassificationInterpretation  # noqa: E402
from imgclean.audit import (embed_images, find_duplicates, find_label_issues, fit_head_on_features,  # noqa: E402
                            out_of_fold_learner_probs, out_of_fold_probs)
from imgclean.data import folder_dls  # noqa: E402
from imgclean.train import make_learner  # noqa: E402

warnings.filterwarnings('ignore')
torch.set_num_threads(2)


def pr(flagged, truth):
    tp = len(set(flagged) & set(truth)); return tp/max(len(flagged), 1), tp/max(len(truth), 1)


TMP = Path(tempfile.mkdtemp(prefix='imgclean_bench_audit_'))   # every generated set lives here, removed at exit
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
root = TMP/'ds'
wrong, pairs = make_noisy_dataset(root, n=args.n_per_class, size=args.size, noise=0.08, n_dups=max(8, args.n_per_class//4))
files = sorted(root.rglob('*.*')); names = [f.relative_to(root).as_posix() for f in files]
print(f"data: {len(files)} images of {args.size} px, {len(wrong)} wrong labels ({len(wrong)/len(files):.1%}), "
      f"{len(pairs)} injected near-duplicate pairs (JPEG q85 / 1-2 px shift / 1.5x resize); backbones: resnet18, random init", flush=True)

# --- duplicates vs injected pairs (default thresholds; tuned on generator seeds 1-5, this data is seed 0)
t = time.time(); d = find_duplicates(files, root=root, progress=False); td = time.time() - t
found = set()
for _, g in d.groupby('group'):
    fs = sorted(g.file); found |= {frozenset((a, b)) for i, a in enumerate(fs) for b in fs[i+1:]}
want = {frozenset(o) for o in pairs}
print(f"duplicates: {len(found)} pairs found, P {len(found & want)/max(len(found), 1):.2f} R {len(found & want)/len(want):.2f} "
      f"({td:.1f}s for {len(files)} images); fastai v2: no duplicate finder", flush=True)

def fastai_way(dls, weights=None, epochs=args.epochs):
    "One resnet18 (random init, or `weights`), fine_tune(epochs, freeze_epochs=1); its valid and train+valid top-loss orders"
    torch.manual_seed(0); learn = make_learner(dls, 'resnet18', pretrained=False, weights=weights)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(epochs, 2e-3, freeze_epochs=1)
    interp = ClassificationInterpretation.from_learner(learn)
    vl = interp.losses.numpy(); vorder = [dls.valid_ds.items.name.iloc[i] for i in np.argsort(-vl)]
    interp_t = ClassificationInterpretation.from_learner(learn, dl=dls.train.new(shuffle=False, drop_last=False))
    alln = list(dls.train_ds.items.name) + list(dls.valid_ds.items.name)
    allloss = np.r_[interp_t.losses.numpy(), vl]; aorder = [alln[i] for i in np.argsort(-allloss)]
    tr_err = float(learn.validate(dl=dls.train.new(shuffle=False, drop_last=False))[1])
    print(f"fastai learner ({'weights ' + Path(weights).name if weights else 'random init'}, 1 frozen + {epochs} epochs) valid error "
          f"{float(learn.validate()[1]):.3f}, error on its own training images {tr_err:.3f} (the flipped labels among them count as errors "
          f"unless memorised)", flush=True)
    return learn, vorder, aorder


def cleaner_at(po, aorder):
    "fastai's cleaner ranking at precision >= po: its best recall over every cut-off (an oracle choice), and that cut-off"
    ok = [(j, r) for j, (pp, r) in ((j, pr(aorder[:j], wrong)) for j in range(1, len(aorder) + 1)) if pp >= po]
    return max(ok, key=lambda o: o[1]) if ok else (0, 0.)


def report(tag, li_of, secs, vorder, aorder, main):
    "One line per path: `main` (audit's default rule for it) in full, the other rules as P/R against the cleaner"
    flagged = list(li_of[main].file[li_of[main].is_issue]); m = len(flagged)
    po, ro = pr(flagged, wrong); pv, rv = pr(vorder[:m], wrong); pa, ra = pr(aorder[:m], wrong)
    j_eq, r_eq = cleaner_at(po, aorder)
    other = []
    for rule, li in li_of.items():
        if rule == main: continue
        f = list(li.file[li.is_issue]); p_, r_ = pr(f, wrong)
        other.append(f"flag={rule!r} {len(f)}: P {p_:.2f} R {r_:.2f} vs cleaner {cleaner_at(p_, aorder)[1]:.2f}")
    print(f"label issues [{tag}, {secs:.0f}s] flag={main!r} flagged {m}: imgclean P {po:.2f} R {ro:.2f} | fastai valid top-{m} losses "
          f"P {pv:.2f} R {rv:.2f} | fastai train+valid (cleaner) top-{m} P {pa:.2f} R {ra:.2f} | "
          f"cleaner at precision >= {po:.2f}: best R {r_eq:.2f} (top-{j_eq}) | also " + '; '.join(other), flush=True)


def rules(labels, probs, classes, names):
    return {f: find_label_issues(labels, probs, classes, files=names, flag=f) for f in ('confident', 'either')}


def label_issue_runs(dls, weights=None, tag='', epochs=args.epochs, colour=True):
    "Both fast paths and the thorough path against fastai's way, every learner from `weights` (None: random init)"
    learn, vorder, aorder = fastai_way(dls, weights, epochs)
    t_ep = args.thorough_epochs or epochs
    t = time.time()
    emb = embed_images(files, learn, size=args.size, stats=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), progress=False)
    report(f'fast{tag}: heads on the fastai learner body embeddings', rules(labels, *out_of_fold_probs(emb, labels), names),
           time.time() - t, vorder, aorder, 'confident')
    if weights is not None:   # audit(path, arch=..., weights=...) before any training: embeddings that never saw a label
        t = time.time()
        emb0 = embed_images(files, 'resnet18', weights=weights, size=args.size, cache_dir=TMP/'emb_cache', progress=False)
        report(f'fast{tag}: heads on the backbone embeddings, no fine-tuning', rules(labels, *out_of_fold_probs(emb0, labels), names),
               time.time() - t, vorder, aorder, 'confident')
    if colour:
        t = time.time()
        report('fast: heads on 4 colour features', rules(labels, *out_of_fold_probs(shape_colour_feats(files), labels), names),
               time.time() - t, vorder, aorder, 'confident')
    t = time.time()
    tp_, tcls, tnames = out_of_fold_learner_probs(root, k=args.thorough_k, arch='resnet18', epochs=t_ep,
                                                  size=args.size, bs=32, pretrained=False, weights=weights, progress=False)
    report(f'thorough{tag}: {args.thorough_k} resnet18 learners x (1 frozen + {t_ep}) epochs',
           rules([n.split('/')[0] for n in tnames], tp_, tcls, tnames), time.time() - t, vorder, aorder, 'either')


def pretrain_in_domain(n, epochs):
    """A torchvision resnet18 trained on clean images of the same classes from another draw of the generator.
    A stand-in for ImageNet weights (which can't be downloaded here, and which know lesson 2's bears); returns its file."""
    import torchvision
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    proot = TMP/'pretrain'
    make_noisy_dataset(proot, n=n, size=args.size, noise=0.0, n_dups=0, seed=7)
    pdls = folder_dls(proot, size=args.size, bs=64, num_workers=0)
    torch.manual_seed(0); m = torchvision.models.resnet18(num_classes=len(pdls.vocab))
    pl = Learner(pdls, m, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    t = time.time()
    with pl.no_bar(), pl.no_logging(): pl.fit_one_cycle(epochs, 3e-3)
    fn = proot/'resnet18-in-domain.pth'; torch.save(m.state_dict(), fn)
    print(f"in-domain pretraining: resnet18 on {len(pdls.train_ds)} clean images (generator seed 7), {epochs} epochs, "
          f"{time.time() - t:.0f}s, valid acc {float(pl.validate()[1]):.3f}", flush=True)
    return fn


if not args.skip_train:
    labels = [f.parent.name for f in files]
    dls = folder_dls(root, size=args.size, bs=32, num_workers=0)
    label_issue_runs(dls)
    if args.fit_epochs:
        label_issue_runs(dls, tag=f', {args.fit_epochs} epochs: fits its training data', epochs=args.fit_epochs, colour=False)
    if args.pretrain_epochs:
        label_issue_runs(dls, pretrain_in_domain(args.pretrain_n_per_class, args.pretrain_epochs), tag=', in-domain pretrained', colour=False)

    # --- frozen phase: fresh learners, same init, same data, same epochs; fastai = fine_tune's frozen phase.
    # Its own larger dataset (the audit set's ~50 valid images make one image 2 points) and several seeds (init noise).
    E = args.frozen_epochs
    froot = TMP/'frozen'
    make_noisy_dataset(froot, n=args.frozen_n_per_class, size=args.size, noise=0.08, n_dups=8, seed=1)
    fdls = folder_dls(froot, size=args.size, bs=32, num_workers=0)
    rows = []
    for seed in range(args.frozen_seeds):
        torch.manual_seed(seed); lf = make_learner(fdls, 'resnet18', pretrained=False); lf.freeze()
        t = time.time()
        with lf.no_bar(), lf.no_logging(): lf.fit_one_cycle(E, 2e-3)
        fa_sec = (time.time() - t)/E; fa_acc = 1 - float(lf.validate()[1])
        torch.manual_seed(seed); lo = make_learner(fdls, 'resnet18', pretrained=False)
        r = fit_head_on_features(lo, epochs=E, lr=1e-2)
        rows.append((fa_sec, r['head_seconds']/E, r['seconds']/E, fa_acc, r['valid_accuracy']))
        print(f"  frozen seed {seed}: epoch s fastai {fa_sec:.2f} imgclean {rows[-1][1]:.3f} (+{r['feature_seconds']:.2f}s one body pass); "
              f"valid acc fastai {fa_acc:.3f} imgclean {r['valid_accuracy']:.3f}", flush=True)
    fa_sec, ours_ep, ours_all, fa_acc, our_acc = np.array(rows).mean(0)
    print(f"frozen phase ({len(fdls.train_ds)} train / {len(fdls.valid_ds)} valid images, {E} epochs, mean of {len(rows)} seeds): "
          f"epoch s fastai {fa_sec:.2f} imgclean {ours_ep:.3f} on cached features -> {fa_sec/ours_ep:.0f}x per epoch, "
          f"{fa_sec/ours_all:.1f}x incl. the feature pass; valid acc fastai {fa_acc:.3f} imgclean {our_acc:.3f} "
          f"(difference {100*(our_acc - fa_acc):+.1f} points)", flush=True)
    lo.unfreeze()
    with lo.no_bar(), lo.no_logging(): lo.fit_one_cycle(1, 1e-3)
    print(f"  then unfreeze + 1 epoch works: imgclean learner valid acc {1 - float(lo.validate()[1]):.3f}", flush=True)

