"Shared pytest fixtures: small generated image folders and free loopback ports."
import contextlib, os, socket, sys
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


@contextlib.contextmanager
def read_only(root):
    "`root`, seen through a read-only file system (a bind mount remounted read-only, as Kaggle's /kaggle/input is), or with its write bits off when not root"
    import os, subprocess
    ro = Path(root).parent/f'{Path(root).name}_ro'; ro.mkdir()
    if os.geteuid() == 0:
        subprocess.run(['mount', '--bind', str(root), str(ro)], check=True)
        try: subprocess.run(['mount', '-o', 'remount,ro,bind', str(ro)], check=True)
        except BaseException: subprocess.run(['umount', str(ro)]); raise
        try: yield ro
        finally: subprocess.run(['umount', str(ro)], check=True)
    else:
        ro.rmdir(); Path(root).rename(ro); os.chmod(ro, 0o555)
        try: yield ro
        finally: os.chmod(ro, 0o755)
