"Real 28×28 grayscale sets with web-style copies for bench/audit.py --dups-only (Fashion-MNIST, sklearn's digits, clipart)."
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

import _clipart_noise
from _clipart_noise import lossy

FASHION = Path('/usr/share/datasets/fashion-mnist')   # apt-get install dataset-fashion-mnist (Zalando's real product photos)
FASHION_CLASSES = ('tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'boot')


def fashion(per_class=300, seed=0):
    "`per_class` Fashion-MNIST training images per class: (uint8 (n, 28, 28), class names)"
    with gzip.open(FASHION/'train-images-idx3-ubyte.gz') as f: x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION/'train-labels-idx1-ubyte.gz') as f: y = np.frombuffer(f.read(), np.uint8, offset=8)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)])
    return x[idx], [FASHION_CLASSES[o] for o in y[idx]]


def digits():
    "sklearn's 1,797 real handwritten 8×8 digits (0-16), upscaled to 28×28 uint8: (images, class names)"
    from sklearn.datasets import load_digits
    d = load_digits()
    ims = [np.asarray(Image.fromarray((o*255/16).astype(np.uint8)).resize((28, 28), Image.BICUBIC)) for o in d.images]
    return np.stack(ims), [f'd{o}' for o in d.target]


def clipart28(base):
    "The bench's clipart base set (class folders of PNGs) as 28×28 grayscale: (images, class names)"
    files = sorted(Path(base).rglob('*.png'))
    return (np.stack([np.asarray(Image.open(f).convert('L').resize((28, 28), Image.BOX)) for f in files]),
            [f.parent.name for f in files])


def _shift(a, dx, dy):
    "`a` moved by (dx, dy) pixels, the uncovered side padded with its edge (the background)"
    h, w = a.shape; m = max(abs(dx), abs(dy))
    p = np.pad(a, m, mode='edge')
    return p[m - dy:m - dy + h, m - dx:m - dx + w]


def small_copy(a, rng, kind):
    "A web-style copy of the uint8 grayscale image `a`: (PIL image, save kwargs, extension, description)"
    h, w = a.shape; desc = []
    if kind == 'exact': return Image.fromarray(a), {}, '.bmp', 'lossless copy in another format'
    if kind == 'jpeg95': return (Image.fromarray(a), *lossy(95), f'{_clipart_noise.LOSSY} q95 of the same pixels')
    if kind == 'shift':
        dx, dy = [int(rng.integers(0, 4))*int(rng.choice([-1, 1])) for _ in range(2)]
        if dx == dy == 0: dx = int(rng.choice([-1, 1]))*int(rng.integers(1, 4))
        a = _shift(a, dx, dy); desc.append(f'shift ({dx}, {dy}) px')
    im = Image.fromarray(a)
    if kind == 'crop':
        f = rng.uniform(0.04, 0.1); cw, ch = int(round(w*f)), int(round(h*f))
        x0, y0 = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
        im = im.crop((x0, y0, w - cw + x0, h - ch + y0))
        if rng.random() < 0.5: im = im.resize((w, h), Image.BICUBIC); desc.append(f'crop {f:.0%}, resized back')
        else: desc.append(f'crop {f:.0%}')
    elif kind == 'scale':
        s = rng.choice([rng.uniform(0.7, 0.85), rng.uniform(1.2, 2.0)])
        im = im.resize((int(round(w*s)), int(round(h*s))), Image.BICUBIC); desc.append(f'rescale {s:.2f}x')
    if rng.random() < 0.5:
        b = rng.uniform(0.85, 1.15); im = Image.fromarray(np.clip(np.asarray(im, np.float32)*b, 0, 255).astype(np.uint8))
        desc.append(f'brightness {b:.2f}')
    q = int(rng.integers(50, 91)); desc.append(f'{_clipart_noise.LOSSY} q{q}')
    return (im, *lossy(q), ', '.join(desc))


SMALL_KINDS = ('shift', 'shift', 'shift', 'crop', 'scale', 'shift', 'crop', 'jpeg95', 'exact', 'shift')


def write_small_set(root, ims, classes, seed, dup_frac=0.03):
    "Images as class-folder PNGs under `root` plus `dup_frac` copies (seeded): (pairs [(original, copy)], {copy: description})"
    root = Path(root); names = []
    for i, (a, c) in enumerate(zip(ims, classes)):
        (root/c).mkdir(parents=True, exist_ok=True); n = f'{c}/{i:05d}.png'; Image.fromarray(a).save(root/n); names.append(n)
    rng = np.random.default_rng(2000 + seed); pairs, desc = [], {}
    for j, i in enumerate(rng.choice(len(ims), int(round(dup_frac*len(ims))), replace=False)):
        im, kw, ext, d = small_copy(ims[i], rng, SMALL_KINDS[j % len(SMALL_KINDS)])
        dst = f'{classes[i]}/{i:05d}_copy{j}{ext}'; im.save(root/dst, **kw); pairs.append((names[i], dst)); desc[dst] = d
    return pairs, desc
