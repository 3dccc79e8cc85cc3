"""Benchmark: image embeddings on a local Ray cluster (`embed_images(..., engine='ray')`, Ray Data, one model per actor) vs in this process.

Usage: .venv/bin/python bench/embed.py [--n 300] [--arch resnet18] [--size 224] [--bs 64] [--runs 2]
Both sides embed the same `n` files (bench/_farm.py's image pool: photo-like JPEG/PNG, 96-640 px, written once) with the
same model (`--arch` with random weights: `pretrained=False`, which costs what pretrained weights cost), no cache. Ray
starts a local cluster on this machine's cores (one actor per CPU); its first call includes starting the cluster,
so the later calls are the steady state. Prints images/s per call and the ratio ray/local of the best calls."""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(Path(__file__).parent))
from _farm import image_pool, unique  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=300); p.add_argument('--arch', default='resnet18')
    p.add_argument('--size', type=int, default=224); p.add_argument('--bs', type=int, default=64); p.add_argument('--runs', type=int, default=2)
    a = p.parse_args()
    from imgclean.audit import embed_images
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_embed_'))
    try:
        pool, files = image_pool(), []
        for i in range(a.n):
            b = unique(pool[i % len(pool)], i); fn = tmp/(f'{i}.png' if b.startswith(b'\x89PNG') else f'{i}.jpg')
            fn.write_bytes(b); files.append(fn)
        print(f"{a.n} files, {a.arch} (random weights) at {a.size} px, bs {a.bs}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        best, ref = {}, None
        for run in range(a.runs):
            for side in ('local', 'ray'):
                torch.manual_seed(0)   # the same random weights for every call
                t0 = time.monotonic()
                f = embed_images(files, a.arch, bs=a.bs, size=a.size, pretrained=False, progress=False, engine=side)
                dt = time.monotonic() - t0
                if ref is None: ref = f
                same = np.allclose(f, ref, atol=1e-4)
                best[side] = max(best.get(side, 0), a.n/dt)
                print(f"run {run+1} {side:5s} {a.n/dt:7.1f} images/s  {dt:6.1f} s  same vectors as local: {same}  load {os.getloadavg()[0]:.1f}"
                      + ('  (includes starting Ray)' if side == 'ray' and run == 0 else ''), flush=True)
        print(f"embed images/s  local {best['local']:.1f}  ray {best['ray']:.1f}  ratio {best['ray']/best['local']:.2f}x (best call of each)")
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
