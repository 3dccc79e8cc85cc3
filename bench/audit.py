"""Audit benchmark: imgclean vs fastai's way on generated data with injected label noise and near duplicates.
Usage: python bench/audit.py [--n-per-class 60] [--size 48] [--scale-n 100000] [--epochs 3]"""
import argparse, resource, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from _audit_helpers import make_noisy_dataset, shape_colour_feats  # noqa: E402

from fastai.interpret import ClassificationInterpretation
from imgclean.audit import embed_images, find_duplicates, find_label_issues, fit_head_on_features, topk_neighbours
from imgclean.data import folder_dls
from imgclean.train import make_learner

warnings.filterwarnings('ignore')
p = argparse.ArgumentParser()
p.add_argument('--n-per-class', type=int, default=60); p.add_argument('--size', type=int, default=48)
p.add_argument('--scale-n', type=int, default=100000); p.add_argument('--epochs', type=int, default=3)
args = p.parse_args()
torch.set_num_threads(2)

def pr(flagged, truth):
    tp = len(set(flagged) & set(truth)); return tp/max(len(flagged), 1), tp/max(len(truth), 1)

root = Path(tempfile.mkdtemp())/'ds'
wrong, pairs = make_noisy_dataset(root, n=args.n_per_class, size=args.size, noise=0.08, n_dups=max(8, args.n_per_class//4))
files = sorted(root.rglob('*.*')); names = [f.relative_to(root).as_posix() for f in files]
print(f"data: {len(files)} images, {len(wrong)} wrong labels ({len(wrong)/len(files):.1%}), {len(pairs)} injected near-duplicate pairs")

# --- same model budget: one resnet18 from scratch (no pretrained weights here), fine_tune(epochs, freeze_epochs=1)
dls = folder_dls(root, size=args.size, bs=32, num_workers=0)
learn = make_learner(dls, 'resnet18', pretrained=False)
learn.freeze(); t = time.time(); learn.fit_one_cycle(1, 1e-2); fastai_frozen = time.time() - t
acc_fastai_frozen = 1 - float(learn.validate()[1])
learn.unfreeze(); learn.fit_one_cycle(args.epochs, 1e-3)
interp = ClassificationInterpretation.from_learner(learn)
vnames = [root.joinpath(*Path(o).parts).relative_to(root).as_posix() if False else str(Path(o)) for o in dls.valid_ds.items.name]
vl = interp.losses.numpy(); vorder = [dls.valid_ds.items.name.iloc[i] for i in np.argsort(-vl)]
tdl = dls.train.new(shuffle=False, drop_last=False)
interp_t = ClassificationInterpretation.from_learner(learn, dl=tdl)
alln = list(dls.train_ds.items.name) + list(dls.valid_ds.items.name)
allloss = np.r_[interp_t.losses.numpy(), vl]; aorder = [alln[i] for i in np.argsort(-allloss)]

# --- ours: out-of-fold confident learning on (a) the same learner's body embeddings (b) simple colour features
emb = embed_images(files, learn, size=args.size, stats=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), progress=False)
labels = [f.parent.name for f in files]
for tag, feats in (('learner-body embeddings', emb), ('colour features', shape_colour_feats(files))):
    li = find_label_issues(labels, feats=feats, files=names)
    flagged = list(li.file[li.is_issue]); m = len(flagged)
    po, ro = pr(flagged, wrong)
    pv, rv = pr(vorder[:m], wrong); pa, ra = pr(aorder[:m], wrong)
    print(f"label issues [{tag}] flagged {m}: imgclean P {po:.2f} R {ro:.2f} | fastai valid top-{m} losses P {pv:.2f} R {rv:.2f}"
          f" | fastai train+valid top-{m} losses P {pa:.2f} R {ra:.2f} | recall ratio vs cleaner {ro/max(ra, 1e-9):.1f}x")

# --- duplicates vs injected pairs
t = time.time(); d = find_duplicates(files, root=root, progress=False); td = time.time() - t
found = set()
for _, g in d.groupby('group'):
    fs = sorted(g.file); found |= {frozenset((a, b)) for i, a in enumerate(fs) for b in fs[i+1:]}
want = {frozenset(o) for o in pairs}
print(f"duplicates: {len(found)} pairs found, P {len(found & want)/max(len(found), 1):.2f} R {len(found & want)/len(want):.2f} "
      f"({td:.1f}s for {len(files)} images); fastai v2: no duplicate finder")

# --- frozen phase on cached features vs fastai frozen epoch (fresh learners, same init)
torch.manual_seed(0); l2 = make_learner(dls, 'resnet18', pretrained=False); l2.freeze()
r = fit_head_on_features(l2, epochs=1, lr=1e-2)
t = time.time(); r5 = fit_head_on_features(l2, epochs=5, lr=1e-2); t5 = time.time() - t
print(f"frozen epoch s  fastai {fastai_frozen:.2f}  imgclean 1 epoch incl. feature pass {r['seconds']:.2f} "
      f"(5 epochs incl. feature pass {t5:.2f})  ratio {fastai_frozen/r['seconds']:.1f}x; "
      f"valid acc fastai {acc_fastai_frozen:.3f} imgclean {r['valid_accuracy']:.3f} (5 ep {r5['valid_accuracy']:.3f})")

# --- scale: top-k over synthetic N×512 float32
def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
for n in sorted({5000, 20000, args.scale_n}):
    x = np.random.default_rng(0).standard_normal((n, 512), dtype=np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = time.time(); D, I = topk_neighbours(x, 10); tk = time.time() - t
    line = f"scale N={n}: top-10 {tk:.1f}s peak RSS {peak_mb():.0f} MB (k·N results {D.nbytes + I.nbytes >> 20} MB)"
    if n <= 20000:
        t = time.time(); S = x @ x.T; np.argsort(-S, 1)[:, :11]; tn = time.time() - t
        line += f" | N×N: {tn:.1f}s, matrix {S.nbytes >> 20} MB, peak RSS {peak_mb():.0f} MB"; del S
    else: line += f" | N×N would need {4*n*n/2**30:.0f} GB for the float32 matrix alone"
    print(line, flush=True)
