"Export/load round trip, single and batch predictions, bad inputs, and the shipped URL-collector JavaScript."
import shutil, subprocess, sys, threading, warnings
from pathlib import Path
from urllib.parse import unquote

import matplotlib
matplotlib.use('Agg')
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_helpers import tiny_learner, write_bad_files  # noqa: E402

from imgclean.export import (export_learner, image_paths, load_export, plot_prediction_counts, predict_files,  # noqa: E402
                             predict_image, url_collector_js)

ASSETS = Path(__file__).resolve().parents[1]/'imgclean'/'assets'


@pytest.fixture(scope='module')
def trained():
    return tiny_learner()


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
    learn, _, _ = trained
    fn = export_learner(learn, tmp_path_factory.mktemp('exp')/'export.pkl')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return fn, load_export(fn)


def test_export_is_atomic_and_round_trips(trained, exported, tmp_path):
    learn, root, _ = trained
    fn, learn2 = exported
    assert [p.name for p in fn.parent.iterdir()] == ['export.pkl']   # no temp file left
    assert list(learn2.dls.vocab) == list(learn.dls.vocab)
    files = sorted(root.rglob('*.png'))
    a = predict_files(learn, files, progress=False, probs=True)
    b = predict_files(learn2, files, progress=False, probs=True)
    pd.testing.assert_frame_equal(a, b)   # identical predictions after the round trip
    # relative names go under learn.path, as with fastai's learn.export
    old, learn.path = learn.path, tmp_path
    try: rel = export_learner(learn, 'models/rel_export.pkl')
    finally: learn.path = old
    assert rel == tmp_path/'models'/'rel_export.pkl' and rel.stat().st_size > 1e5


def test_export_failure_keeps_old_file(trained, tmp_path, monkeypatch):
    learn, _, _ = trained
    fn = tmp_path/'export.pkl'; fn.write_bytes(b'previous export')
    from fastai.learner import Learner
    def boom(self, fname, **kw):
        Path(fname).write_bytes(b'half'); raise OSError('disk full')
    monkeypatch.setattr(Learner, 'export', boom)
    with pytest.raises(RuntimeError, match='disk full'): export_learner(learn, fn)
    assert fn.read_bytes() == b'previous export' and sorted(p.name for p in tmp_path.iterdir()) == ['export.pkl']


def test_export_leaves_out_unpicklable_callbacks(trained, tmp_path):
    from fastai.callback.core import Callback
    learn, _, _ = trained
    class HoldsLock(Callback): pass
    cb = HoldsLock(); cb.lock = threading.Lock()
    learn.add_cb(cb)
    try:
        with pytest.warns(UserWarning, match='HoldsLock'): fn = export_learner(learn, tmp_path/'export.pkl')
        assert cb in learn.cbs                                  # still on the learner
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            assert not any(type(c).__name__ == 'HoldsLock' for c in load_export(fn).cbs)
    finally: learn.remove_cb(cb)


def test_export_after_another_library_replaced_print(trained, tmp_path, monkeypatch):
    "Ray swaps builtins.print when it shows a worker's message (tqdm_ray): fastai's export of a learner made before failed, "
    "\"Can't pickle <built-in function print>: it's not the same object as builtins.print\""
    import builtins
    def safe_print(*a, **k): pass
    learn, _, _ = trained
    monkeypatch.setattr(builtins, 'print', safe_print)
    fn = export_learner(learn, tmp_path/'after.pkl')
    assert builtins.print is safe_print and load_export(fn).dls.vocab == learn.dls.vocab   # exported, print left as that library set it


def test_load_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='train and export'): load_export(tmp_path/'nope.pkl')
    with pytest.raises(IsADirectoryError): load_export(tmp_path)
    (tmp_path/'bad.pkl').write_bytes(b'\x80\x04garbage that is no pickle')
    with pytest.raises(ValueError, match='not a fastai export'): load_export(tmp_path/'bad.pkl')
    (tmp_path/'text.pkl').write_text('hello')
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # a file that is no pickle at all gets no warning about running a pickle's code first
        with pytest.raises(ValueError, match='not a fastai export'): load_export(tmp_path/'text.pkl')
    import torch
    torch.save({'a': 1}, tmp_path/'dict.pkl')
    with pytest.raises(TypeError, match='not hold a fastai Learner|not a fastai Learner'): load_export(tmp_path/'dict.pkl')


def test_load_export_warns_about_pickles(exported):
    fn, _ = exported
    with pytest.warns(UserWarning, match='only load export files you made or trust|Only load export files'):
        load_export(fn)


def test_predict_image_order_and_sum(exported, trained):
    _, learn2 = exported
    learn, root, _ = trained
    img = sorted(root.rglob('*.png'))[0]
    preds = predict_image(learn2, img)
    assert sorted(c for c, _ in preds) == sorted(learn.dls.vocab)
    probs = [p for _, p in preds]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    from fastai.vision.core import PILImage
    _, idx, fp = learn.predict(PILImage.create(img))
    assert preds[0][0] == learn.dls.vocab[int(idx)] and abs(preds[0][1] - float(fp.max())) < 1e-5
    # PIL images and bytes work too
    from PIL import Image
    for other in (Image.open(img), img.read_bytes()):
        res = predict_image(learn2, other)
        assert [c for c, _ in res] == [c for c, _ in preds]
        np.testing.assert_allclose([p for _, p in res], probs, atol=1e-5)
    with pytest.raises(ValueError, match='not a readable image'): predict_image(learn2, b'nope')


def test_predict_files_folder_with_bad_files(exported, trained, tmp_path):
    _, learn2 = exported
    _, root, _ = trained
    data = tmp_path/'data'; shutil.copytree(root, data)
    bad = write_bad_files(data/'misc')
    out = tmp_path/'out'/'predictions.csv'
    df = predict_files(learn2, data, out=out, probs=True, bs=4, progress=False)
    n_img = len(list(root.rglob('*.png')))
    assert len(df) == n_img + len(bad)
    sk = df[df.status == 'skipped']
    assert {Path(f).name for f in sk.file_name} == bad and (sk.reason != '').all() and sk.probability.isna().all()
    ok = df[df.status == 'ok']
    vocab = list(learn2.dls.vocab)
    np.testing.assert_allclose(ok[vocab].sum(axis=1), 1, atol=1e-5)
    assert (ok.prediction == ok[vocab].idxmax(axis=1)).all()
    np.testing.assert_allclose(ok.probability, ok[vocab].max(axis=1))
    back = pd.read_csv(out, keep_default_na=False)
    assert list(back.columns) == ['file_name', 'prediction', 'probability', *vocab, 'status', 'reason'] and len(back) == len(df)
    assert not [p for p in out.parent.iterdir() if p.name != 'predictions.csv']   # atomic write: no temp left
    # without probs: the three submission columns plus status/reason
    df2 = predict_files(learn2, [data/'circle', data/'misc'/'notes.txt'], progress=False)
    assert list(df2.columns) == ['file_name', 'prediction', 'probability', 'status', 'reason']
    assert (df2.status == 'ok').sum() == len(list((root/'circle').glob('*.png')))


def test_predict_files_bad_inputs(exported, tmp_path):
    _, learn2 = exported
    (tmp_path/'empty').mkdir(); (tmp_path/'empty'/'a.txt').write_text('x')
    with pytest.raises(ValueError, match='no image files'): predict_files(learn2, tmp_path/'empty', progress=False)
    with pytest.raises(ValueError, match='no image files'): predict_files(learn2, tmp_path/'missing', progress=False)
    with pytest.raises(FileNotFoundError): predict_files(tmp_path/'nope.pkl', tmp_path)
    img = tmp_path/'one.png'
    from PIL import Image
    Image.new('RGB', (20, 20), 'red').save(img)
    with pytest.raises(IsADirectoryError): predict_files(learn2, img, out=tmp_path, progress=False)
    todo, skip = image_paths([img, img, tmp_path/'missing.jpg'])
    assert todo == [img] and skip == [(tmp_path/'missing.jpg', 'file not found')]


def test_plot_prediction_counts(exported, trained):
    _, learn2 = exported
    _, root, _ = trained
    df = predict_files(learn2, root, progress=False)
    fig = plot_prediction_counts(df)
    heights = {t.get_text(): p.get_height() for t, p in zip(fig.axes[0].get_xticklabels(), fig.axes[0].patches)}
    assert heights == df.prediction.value_counts().to_dict()
    with pytest.raises(ValueError, match="'prediction' column"): plot_prediction_counts(pd.DataFrame(dict(label=['a'])))
    with pytest.raises(ValueError, match="'prediction' column"): plot_prediction_counts(['a'])


def test_url_collector_assets_ship_and_parse(tmp_path):
    js = url_collector_js()
    assert (ASSETS/'collect_urls.js').read_text() == js and 'urls_' in js and 'murl' in js
    bm = url_collector_js(bookmarklet=True)
    assert (ASSETS/'bookmarklet.txt').read_text().strip() == bm, "regenerate bookmarklet.txt from collect_urls.js"
    assert bm.startswith('javascript:') and not any(ch in bm for ch in ' \n"')
    import setuptools  # noqa: F401  the package data rule ships the assets
    setup = (ASSETS.parents[1]/'setup.py').read_text()
    assert "'assets/*'" in setup
    node = shutil.which('node') or ('/usr/bin/node' if Path('/usr/bin/node').exists() else None)
    if node is None: pytest.skip('node is not installed: cannot syntax-check the JavaScript')
    (tmp_path/'c.js').write_text(js); (tmp_path/'b.js').write_text(unquote(bm[len('javascript:'):]))
    for f in ('c.js', 'b.js'):
        r = subprocess.run([node, '--check', str(tmp_path/f)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope='module')
def staged(tmp_path_factory):
    "(learn, root): make_learner + fine_tune_stages on 3 classes x 10 shapes, as `imgclean train` builds it"
    from conftest import make_class_folders
    from imgclean.data import folder_dls
    from imgclean.train import fine_tune_stages, make_learner
    root = make_class_folders(tmp_path_factory.mktemp('staged')/'shapes', n=10)
    learn = make_learner(folder_dls(root, size=32, bs=8, num_workers=0), 'resnet18', pretrained=False)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore'); fine_tune_stages(learn, epochs=1, lr=1e-3, save=False)
    return learn, root


BLOCK_IMGCLEAN = '''
import sys
class NoImgclean:
    "A machine where imgclean is not installed"
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'imgclean': raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoImgclean())
'''


def test_export_loads_with_fastai_alone(staged, tmp_path):
    "export.pkl holds nothing of imgclean's: fastai's load_learner reads it where imgclean cannot be imported"
    learn, root = staged
    fn = export_learner(learn, tmp_path/'export.pkl')
    img = sorted(root.rglob('*.png'))[0]
    code = BLOCK_IMGCLEAN + f'''
import warnings; warnings.simplefilter('ignore')
try: import imgclean; print('imgclean importable')
except ModuleNotFoundError: pass
from fastai.learner import load_learner
learn = load_learner({str(fn)!r})
cls, idx, probs = learn.predict({str(img)!r})
print(cls, ' '.join(f'{{p:.6f}}' for p in probs.tolist()))
print('imgclean modules:', sorted(m for m in sys.modules if m.split('.')[0] == 'imgclean'))
'''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={k: v for k, v in __import__('os').environ.items() if k != 'PYTHONPATH'})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert 'imgclean importable' not in lines and lines[-1] == 'imgclean modules: []'
    cls, *probs = lines[-2].split()
    want = learn.predict(img)
    assert cls == want[0]
    np.testing.assert_allclose([float(p) for p in probs], want[2].numpy(), atol=1e-5)


def test_fastai_image_classifier_cleaner_on_our_learner(staged, tmp_path, monkeypatch):
    "fastai's own ImageClassifierCleaner(learn) on an imgclean learner: files listed, delete/change as in the course"
    import builtins
    from IPython.display import display
    from fastai.vision.widgets import ImageClassifierCleaner
    monkeypatch.setattr(builtins, 'display', display, raising=False)   # fastai's widgets find it in Jupyter's builtins
    learn, root = staged
    data = tmp_path/'copy'; shutil.copytree(root, data)
    cleaner = ImageClassifierCleaner(learn)
    fns = list(cleaner.fns)
    assert fns and all(Path(f).is_file() and Path(f).parent.name == cleaner.dd_cats.value for f in fns)
    assert cleaner.dd_ds.value == 'Train'
    dds = [box.children[1] for box in cleaner.iw.widget.children]
    dds[0].value = '<Delete>'; dds[1].value = 'square'
    assert list(cleaner.delete()) == [0] and list(cleaner.change()) == [(1, 'square')]
    # the course's code, pointed at a copy of the dataset (renaming on the way: fastai numbers files per class folder,
    # so the course's `shutil.move(fn, path/cat)` collides here; imgclean's own cleaner resolves that)
    moved = {idx: data/Path(cleaner.fns[idx]).relative_to(root) for idx in (0, 1)}
    for idx in cleaner.delete(): moved[idx].unlink()
    for idx, cat in cleaner.change(): shutil.move(str(moved[idx]), data/cat/f'moved_{moved[idx].name}')
    assert not moved[0].exists() and not moved[1].exists() and (data/'square'/f'moved_{moved[1].name}').exists()
    cleaner.dd_ds.value = 'Valid'
    assert all(Path(f) in learn.dls.valid_ds.items for f in cleaner.fns)


def test_fastai_tools_keep_working_on_our_dataloaders(staged, tmp_path):
    "test_dl on plain files (no getter to remove), show_batch, plot_top_losses, and imgclean.widgets.losses_table"
    import matplotlib.pyplot as plt
    from fastai.interpret import ClassificationInterpretation
    from imgclean.core import rel_name
    from imgclean.widgets import losses_table
    learn, root = staged
    files = sorted(root.rglob('*.png'))[:5]
    with learn.no_bar(): p = learn.get_preds(dl=learn.dls.test_dl(files))[0]
    np.testing.assert_allclose(p.numpy(), predict_files(learn, files, probs=True, progress=False)[list(learn.dls.vocab)].to_numpy(), atol=1e-5)
    learn.dls.show_batch(max_n=4); plt.close('all')
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_top_losses(4); plt.close('all')
    lt = losses_table(learn)
    assert sorted(lt.file) == sorted(rel_name(f, root) for f in root.rglob('*.png'))
    assert (lt.label == lt.file.str.split('/').str[0]).all()


def test_greyscale_learner_gets_greyscale_inputs(tmp_path):
    "A learner on `ImageBlock(cls=PILImageBW)` (one input channel) predicts files, bytes and PIL images as `learn.predict` does"
    from fastai.vision.core import PILImageBW
    from PIL import Image
    from _export_helpers import tiny_bw_learner
    learn, root = tiny_bw_learner()
    fn = next(root.rglob('*.png'))
    with learn.no_bar(): ref = dict(zip(map(str, learn.dls.vocab), learn.predict(PILImageBW.create(fn))[2].tolist()))
    for img in (fn, fn.read_bytes(), Image.open(fn)):
        got = dict(predict_image(learn, img))
        assert max(abs(got[c] - ref[c]) for c in ref) < 1e-4
    df = predict_files(learn, root, probs=True, progress=False)
    assert (df.status == 'ok').all()
    from imgclean.data import folder_items
    from imgclean.interpret import report_on_items
    rep = report_on_items(learn, root, folder_items(root, valid_pct=0))   # the reports decode alike (they crashed on 3 channels)
    assert rep.loc['accuracy', 'support'] == len(list(root.rglob('*.png')))   # every image predicted


def test_export_holds_no_training_file_names(trained, tmp_path):
    "export.pkl does not carry `image_dls`'s {file: label} dict (every training path); the live learner keeps it"
    import zipfile
    learn, root, _ = trained
    n = len(learn.dls.label_of)
    fn = export_learner(learn, tmp_path/'export.pkl')
    with zipfile.ZipFile(fn) as z: data = z.read(next(o for o in z.namelist() if o.endswith('data.pkl')))
    assert b'000.png' not in data and b'circle' in data   # the classes stay, the file names go
    assert len(learn.dls.label_of) == n
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert predict_image(load_export(fn), next(root.rglob('*.png')))[0][0] in learn.dls.vocab


def test_export_to_a_relative_path_that_names_the_learners_folder(trained, monkeypatch):
    "The README's export_learner(learn, path/'images'/'export.pkl') with learn.path = path/'images' wrote path/images/path/images/export.pkl"
    import os
    learn, root, _ = trained
    monkeypatch.chdir(root.parent)
    old = learn.path
    try:
        learn.path = Path(root.name)                                   # relative, as a DataLoaders of a relative path gives
        fn = export_learner(learn, Path(root.name)/'named.pkl')
        assert os.path.abspath(fn) == str(root/'named.pkl') and not (root/root.name).exists()
        assert os.path.abspath(export_learner(learn, 'plain.pkl')) == str(root/'plain.pkl')   # fastai's meaning still holds
    finally: learn.path = old


def test_failed_export_leaves_the_learner_as_it_was(trained, tmp_path):
    "An unpicklable attribute stops the export: the learner keeps its data and optimizer, and the error says what to remove"
    learn, _, _ = trained
    opt, n = learn.opt, (len(learn.dls.train_ds), len(learn.dls.valid_ds))
    learn.log_file = open(tmp_path/'log.txt', 'w')
    try:
        with pytest.raises(RuntimeError, match='cannot be pickled'): export_learner(learn, tmp_path/'export.pkl')
        assert (len(learn.dls.train_ds), len(learn.dls.valid_ds)) == n and learn.opt is opt
        # the course's own `learn.export()` under `from imgclean.all import *` (fastai's alone empties the datasets)
        code = ("from imgclean.all import *\nimport sys, pickle\nfrom _export_helpers import tiny_learner\n"
                "learn, _, _ = tiny_learner(); learn.f = open(sys.argv[1], 'w'); n = len(learn.dls.train_ds)\n"
                "try: learn.export(sys.argv[2])\nexcept Exception as e: print('failed')\n"
                "print(n, len(learn.dls.train_ds), learn.opt is not None)\n")
        out = subprocess.run([sys.executable, '-c', code, str(tmp_path/'f.txt'), str(tmp_path/'e.pkl')], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=600)
        lines = out.stdout.split()
        assert lines[0] == 'failed' and lines[1] == lines[2] != '0' and lines[3] == 'True', (out.stdout, out.stderr[-2000:])
    finally: learn.log_file.close(); del learn.log_file
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.txt', 'log.txt']   # no export, no temp file (fastai leaves a half-written one)


def test_export_into_a_read_only_folder_says_so(trained, tmp_path):
    from conftest import read_only
    learn, _, _ = trained
    (tmp_path/'out').mkdir()
    with read_only(tmp_path/'out') as ro:
        with pytest.raises(PermissionError, match='read-only here; pass fname='): export_learner(learn, ro/'export.pkl')
