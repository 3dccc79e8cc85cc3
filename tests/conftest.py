"Shared pytest fixtures: small generated image folders and free loopback ports."
import os, socket, sys
from pathlib import Path

import pytest

# Tests run on CPU with few threads: two cores are shared by everything here.
os.environ.setdefault('OMP_NUM_THREADS', '2')
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'tests'/'artifacts'


@pytest.fixture
def free_port():
    "A free TCP port on 127.0.0.1"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_class_folders(root, classes=('circle', 'square', 'triangle'), n=12, size=32, seed=0):
    "Write `n` drawn shapes per class as PNG under `root/<class>/`; return `root`"
    from imgclean.datasets import draw_shape
    root = Path(root)
    for c in classes:
        (root/c).mkdir(parents=True, exist_ok=True)
        for i in range(n): draw_shape(c, size, seed=seed + i).save(root/c/f'{i:03d}.png')
    return root


@pytest.fixture
def class_folders(tmp_path):
    "A dataset root with 3 classes x 12 PNG images of 32 px"
    return make_class_folders(tmp_path/'shapes')


@pytest.fixture
def artifacts():
    "Folder for screenshots and other test artifacts (kept after the run)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
