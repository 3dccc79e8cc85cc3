"End to end: the demo workflow through the real `imgclean` command, then retraining from cleaned.csv."
import os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

BIN = Path(sys.executable).parent/'imgclean'


def imgclean(*args, timeout=600, **kw):
    "Run the installed `imgclean` console script"
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "Run `imgclean demo` at a tiny size once for this module"
    path = tmp_path_factory.mktemp('demo')
    env = {**os.environ, 'TORCH_HOME': str(path/'torch_home')}   # empty hub cache: no pretrained weights
    r = imgclean('demo', '--path', path, '--n-per-class', 10, '--size', 32, '--epochs', 1, '--freeze-epochs', 1,
                 '--arch', 'resnet18', env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return path, r.stdout


def test_demo_runs_every_stage(demo):
    path, out = demo
    for stage in ('1/6', '2/6', '3/6', '4/6', '5/6', '6/6', 'summary'): assert f'== {stage}' in out
    assert 'training from scratch' in out          # no cached weights: said plainly, not a crash
    assert 'lr_find suggests' in out
    for fn in ('export.pkl', 'confusion_matrix.png', 'top_losses.png'): assert (path/fn).stat().st_size > 0


def test_demo_download_and_verify_outcome(demo):
    path, _ = demo
    truth = pd.read_csv(path/'images'/'manifest.csv')
    urls = sum(len(f.read_text().split()) for f in (path/'urls').glob('urls_*.csv'))
    assert len(truth) == urls                      # one manifest row per input URL
    # every file left in a class folder decodes; the corrupt ones were quarantined, not deleted
    from PIL import Image
    from imgclean.core import class_items
    files = [path/'images'/n for n in class_items(path/'images', all_files=True).name]                     # class folders (fastai's models/ is not one)
    assert files and not any(f.suffix == '.pth' for f in files)
    for f in files:
        with Image.open(f) as im: im.load()
    quarantined = [f for f in (path/'images_quarantine').rglob('*') if f.is_file() and f.name != 'report.csv']
    assert len(quarantined) >= 2
    # the 404s are reported as failed rows
    assert (truth.status == 'failed').sum() >= 4


def test_predict_cli_on_demo_export(demo):
    path, _ = demo
    img = next((path/'images'/'circle').iterdir())
    r = imgclean('predict', path/'export.pkl', img)
    assert r.returncode == 0, r.stderr
    rows = [l.split('\t') for l in r.stdout.strip().splitlines()]
    probs = [float(p) for _, p in rows]
    assert probs == sorted(probs, reverse=True) and len(rows) == 4
    assert {c for c, _ in rows} == {'circle', 'square', 'triangle', 'star'}


def test_retrain_from_cleaned_csv(demo):
    path, _ = demo
    root = path/'images'
    from imgclean.data import folder_items
    items = folder_items(root, valid_pct=0)
    kept = items.iloc[1:][['name', 'label']]                          # one item deleted by the person
    kept.loc[kept.index[0], 'label'] = 'square'                        # one relabelled
    kept.to_csv(root/'cleaned.csv', index=False)
    r = imgclean('train', root, '--csv', 'cleaned.csv', '--arch', 'resnet18', '--size', 32, '--epochs', 1,
                 '--no-pretrained', '--lr', '1e-3', '--bs', 16, '--export', 'retrained.pkl')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f'{len(kept)} images' in r.stdout
    assert (root/'retrained.pkl').is_file()


def test_the_demo_never_replaces_files_it_did_not_make(tmp_path):
    "`imgclean demo --path DIR` deleted DIR/site (shutil.rmtree) and overwrote DIR/urls/urls_circle.csv; --n-per-class 0 failed after the download"
    d = tmp_path/'mine'; (d/'site').mkdir(parents=True); (d/'site'/'precious.txt').write_text('keep me')
    r = imgclean('demo', '--path', d, '--n-per-class', 4, '--size', 32, '--epochs', 1, '--arch', 'resnet18')
    assert r.returncode == 2 and 'holds files that no imgclean demo made (site)' in r.stderr, r.stderr[-2000:]
    assert (d/'site'/'precious.txt').read_text() == 'keep me' and sorted(o.name for o in d.iterdir()) == ['site']
    r = imgclean('demo', '--path', tmp_path/'new', '--n-per-class', 0)
    assert r.returncode == 2 and 'n_per_class=0 (--n-per-class): pass a whole number, at least 1' in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'new'/'site').exists()
