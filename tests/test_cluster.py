"""Embeddings on a local Ray cluster: the vectors of `imgclean.audit.embed_images`, row by row in the caller's order, with
undecodable files marked. (`pip install imgclean[ray]`; `make test` installs it, so nothing here is skipped in CI.)"""
import random, sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_class_folders  # noqa: E402

ray = pytest.importorskip('ray', reason="the ray extra is not installed (pip install 'imgclean[ray]')")
from imgclean.audit import IMAGENET_STATS, embed_images, feature_model  # noqa: E402
from imgclean.cluster import embed_on_ray  # noqa: E402


@pytest.fixture(scope='module')
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def tiny_model(seed=0):
    "A small random conv net: image batch -> 16 feature maps"
    import torch
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())


@pytest.fixture
def files(tmp_path):
    "A dozen small images in three class folders, one corrupt file, in a shuffled order; first a large image (slow to decode)"
    from PIL import Image
    root = make_class_folders(tmp_path/'shapes', n=4)
    (root/'circle'/'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a JPEG')
    fns = sorted(root.rglob('*.*')); random.Random(1).shuffle(fns)
    big = root/'square'/'big.png'   # its batch finishes after later ones: rows must still land at their index
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)).save(big, compress_level=1)
    return [big, *fns]


def test_embed_on_ray_gives_embed_images_rows_in_order(cluster, files):
    model = tiny_model()
    here = embed_images(files, model=model, cache_dir=None, size=32, bs=4, progress=False)
    mean, std = IMAGENET_STATS
    feats, ok = embed_on_ray(files, feature_model(model), size=32, mean=mean, std=std, bs=3, num_actors=2, progress=False)
    assert feats.dtype == np.float32 and feats.shape == here.shape == (14, 16)
    assert ok.tolist() == [f.name != 'corrupt.jpg' for f in files]
    assert np.isnan(feats[~ok]).all()
    for i in np.flatnonzero(ok): np.testing.assert_allclose(feats[i], here[i], rtol=1e-5, atol=1e-5, err_msg=f"row {i} ({files[i]})")


def test_embed_on_ray_with_relative_paths_and_a_progress_bar(cluster, files, monkeypatch):
    "The actors' working folder is not the driver's: relative paths are made absolute before they leave"
    monkeypatch.chdir(files[0].parents[1])
    rel = [f.relative_to(files[0].parents[1]) for f in files]
    feats, ok = embed_on_ray(rel, feature_model(tiny_model()), size=32, bs=8, progress=True)
    assert ok.sum() == 13 and not np.isnan(feats[ok]).any()


def test_embed_on_ray_with_no_files(cluster):
    feats, ok = embed_on_ray([], feature_model(tiny_model()), progress=False)
    assert feats.shape == (0, 0) and ok.shape == (0,)


def test_rows_arriving_out_of_order_land_at_their_index():
    from imgclean.cluster import _collect
    b = [dict(i=np.array([2, 0]), ok=np.array([True, False]), feat=np.array([[2., 2.], [np.nan, np.nan]], dtype=np.float32)),
         dict(i=np.array([1]), ok=np.array([True]), feat=np.array([[1., 1.]], dtype=np.float32))]
    feats, ok = _collect(b, 3, progress=False)
    assert ok.tolist() == [False, True, True] and feats[1:].tolist() == [[1., 1.], [2., 2.]] and np.isnan(feats[0]).all()


def test_embed_images_and_audit_on_ray_fill_the_same_cache(cluster, files, tmp_path):
    "embed_images(engine='ray') gives the local vectors and fills the content-hash cache a local run then reuses; audit passes it on"
    from imgclean.audit import audit
    model, cache = tiny_model(), tmp_path/'cache'
    here = embed_images(files, model=model, cache_dir=None, size=32, bs=4, progress=False)
    there = embed_images(files, model=model, cache_dir=cache, size=32, bs=4, progress=False, engine='ray')
    np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-5)
    (cfn,) = cache.glob('embeddings_*.npz')
    with np.load(cfn) as z: assert len(z['hashes']) == 13   # every decodable file, under its content hash
    again = embed_images(files, model=model, cache_dir=cache, size=32, bs=4, progress=False)   # every vector from the cache
    np.testing.assert_array_equal(again, there)
    with pytest.raises(ValueError, match="engine='spark'"): embed_images(files, model=model, engine='spark')
    root = files[0].parents[1]
    df = audit(root, model=model, size=32, checks=('duplicates',), progress=False, engine='ray')
    assert (root/'issues.csv').is_file() and len(list((root/'.imgclean_cache').glob('embeddings_*.npz'))) == 1


def test_an_interrupted_ray_run_keeps_what_the_cluster_computed(cluster, tmp_path):
    "Ctrl-C in the driver: the vectors came back only when every batch had, so the cache got none of the cluster's work until the end"
    import _thread, threading, time
    root = make_class_folders(tmp_path/'d', n=40)
    files = sorted(root.rglob('*.png')); cd, calls = tmp_path/'cache', tmp_path/'calls'; calls.mkdir()
    class Slow(nn.Module):   # a model call takes 0.2 s and leaves a file behind (the actors run on this machine)
        def __init__(self): super().__init__(); self.inner = tiny_model(); self.calls = str(calls)
        def forward(self, x):
            import os, time, uuid
            time.sleep(0.2); open(os.path.join(self.calls, uuid.uuid4().hex), 'w').close()
            return self.inner(x)
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the actors cannot import this test module
    model, at = Slow(), []
    def interrupt():   # once the first vectors are cached (every 4 with save_every=4)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(cd.glob('embeddings_*.npz')): time.sleep(0.01)
        at.append(len(list(calls.iterdir()))); _thread.interrupt_main()
    import signal
    old = signal.signal(signal.SIGINT, signal.default_int_handler)   # a process started in the background ignores SIGINT, and then interrupt_main does nothing
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            embed_images(files, model=model, cache_dir=cd, size=32, bs=2, save_every=4, progress=False, engine='ray')
    finally: signal.signal(signal.SIGINT, old)
    assert at and at[0] < 40, at   # 60 batches of 2: the first vectors were cached while most were still to compute
    (cfn,) = cd.glob('embeddings_*.npz')
    with np.load(cfn) as z: kept = len(z['hashes'])
    assert 4 <= kept < len(files), kept
    n = len(list(calls.iterdir())); time.sleep(2)
    assert len(list(calls.iterdir())) <= n + 4, (n, len(list(calls.iterdir())))   # the actors stopped (a batch each may end)
    there = embed_images(files, model=model, cache_dir=cd, size=32, bs=2, progress=False, engine='ray')
    assert len(list(calls.iterdir())) < n + 4 + 60, 'the rerun computed every vector again'
    here = embed_images(files, model=model.inner, cache_dir=None, size=32, bs=2, progress=False)
    np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-5)
