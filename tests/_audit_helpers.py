"Generated data for the audit tests and bench: shape classes with injected wrong labels and near duplicates."
import io
from pathlib import Path

import numpy as np
from PIL import Image

from imgclean.datasets import DEMO_CLASSES, draw_shape


def make_noisy_dataset(root, n=40, size=48, noise=0.08, n_dups=6, classes=DEMO_CLASSES, seed=0):
    """Class folders under `root` with `noise` wrong labels and `n_dups` near-duplicates; returns (wrong, dup_pairs)

    `wrong` maps every mislabelled file to its true class, near-duplicate copies of mislabelled images included."""
    root = Path(root); rng = np.random.default_rng(seed); wrong, pairs, k = {}, [], 0
    for c in classes: (root/c).mkdir(parents=True, exist_ok=True)
    for c in classes:
        for i in range(n):
            seed_i = seed*100000 + k; k += 1
            dest = c
            if rng.random() < noise: dest = rng.choice([o for o in classes if o != c])
            name = f'{dest}/{c[:2]}{i:04d}.png'
            draw_shape(c, size, seed=seed_i).save(root/name)
            if dest != c: wrong[name] = c
    files = sorted(p for p in root.rglob('*.png'))
    for j, src in enumerate(rng.choice(files, n_dups, replace=False)):
        im = Image.open(src).convert('RGB'); kind = j % 3
        if kind == 0: out = im; ext, kw = '.jpg', dict(quality=85)
        elif kind == 1: out = Image.fromarray(np.roll(np.asarray(im), 1 + j % 2, axis=1)); ext, kw = '.png', {}
        else: out = im.resize((size*3//2, size*3//2), Image.BILINEAR); ext, kw = '.png', {}
        dst = src.with_name(src.stem + f'_dup{j}' + ext); out.save(dst, **kw)
        pairs.append((src.relative_to(root).as_posix(), dst.relative_to(root).as_posix()))
        if pairs[-1][0] in wrong: wrong[pairs[-1][1]] = wrong[pairs[-1][0]]   # a copy of a mislabelled image sits in the same wrong folder
    return wrong, pairs


def shape_colour_feats(files):
    "Mean colour and area of saturated pixels: simple, honest features for the shape classes"
    out = []
    for f in files:
        a = np.asarray(Image.open(f).convert('RGB').resize((32, 32))).reshape(-1, 3).astype(float)
        c = a[(a.max(1) - a.min(1)) > 80]
        out.append(np.r_[c.mean(0) if len(c) else np.zeros(3), len(c)/len(a)])
    return np.stack(out).astype(np.float32)
