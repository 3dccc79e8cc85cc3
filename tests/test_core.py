"One dataset model: every stage lists the same items with the same labels, in plain and split layouts."
import subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_class_folders  # noqa: E402
from imgclean.audit import audit  # noqa: E402
from imgclean.core import class_items  # noqa: E402
from imgclean.data import folder_items  # noqa: E402
from imgclean.verify import verify_dataset  # noqa: E402
from imgclean.widgets import CleanerState, ImageCleaner  # noqa: E402


def split_layout(root):
    "train/{circle,square}, valid/{circle,square}, a flat unlabelled test/ folder, fastai's models/ and a _trash/"
    make_class_folders(root/'train', classes=('circle', 'square'), n=4)
    make_class_folders(root/'valid', classes=('circle', 'square'), n=2, seed=20)
    (root/'test').mkdir(); (root/'test'/'x.png').write_bytes((root/'train'/'circle'/'000.png').read_bytes())
    (root/'models').mkdir(); (root/'models'/'stage-1.pth').write_bytes(b'not an image')
    (root/'_trash').mkdir(); (root/'_trash'/'old.png').write_bytes((root/'train'/'square'/'000.png').read_bytes())
    return root


def tiny_model():
    "A torch module mapping an image batch to 8-d vectors (the audit's embedding model)"
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.mark.parametrize('layout', ['plain', 'split'])
def test_every_stage_agrees_on_every_label(tmp_path, layout):
    root = split_layout(tmp_path/'ds') if layout == 'split' else make_class_folders(tmp_path/'ds', classes=('circle', 'square'), n=6)
    truth = {n: n.split('/')[-2] for n in class_items(root).name}   # the folder an image sits in
    assert len(truth) == 12 and set(truth.values()) == {'circle', 'square'}
    data = folder_items(root, valid_pct=0.25)
    assert dict(zip(data.name, data.label)) == truth
    if layout == 'split': assert dict(zip(data.name, data.is_valid)) == {n: n.startswith('valid/') for n in truth}
    ver = verify_dataset(root, progress=False, verbose=False, n_workers=0)
    assert ver.ok.all() and dict(zip(ver.file, ver.label)) == truth
    issues = audit(root, model=tiny_model(), size=32, checks=('label', 'duplicates'), k=2, progress=False)
    per = issues[issues.file != '']   # file '': rows about the whole dataset ("about N of M labels look wrong")
    assert len(issues) and all(truth[f] == l for f, l in zip(per.file, per.label))
    st = CleanerState(root)
    assert st.label_of == truth and st.vocab == ['circle', 'square']
    cleaner = ImageCleaner(root, issues=issues, mode='all')
    assert set(cleaner.rows.file) == set(truth)
    cleaned = pd.read_csv(root/'cleaned.csv') if (root/'cleaned.csv').exists() else st.cleaned()
    assert dict(zip(cleaned.name, cleaned.label)) == truth


def test_symlinks_never_leave_the_root_or_double_an_item(tmp_path):
    root = make_class_folders(tmp_path/'ds', classes=('circle', 'square'), n=2)
    outside = tmp_path/'secret.png'; outside.write_bytes((root/'circle'/'000.png').read_bytes())
    (root/'circle'/'out.png').symlink_to(outside)
    (root/'square'/'twin.png').symlink_to(root/'circle'/'000.png')
    with pytest.warns(UserWarning, match='2 files or folders are not items'): items = class_items(root)
    assert sorted(items.name) == ['circle/000.png', 'circle/001.png', 'square/000.png', 'square/001.png']
    with pytest.warns(UserWarning): st = CleanerState(root)   # the cleaner sees the same four items, not the links
    assert sorted(st.label_of) == sorted(items.name)


def test_image_extensions_do_not_depend_on_import_order():
    "imgclean.core alone (as the CLI imports it, without fastai) lists .webp files, and the same extensions as fastai"
    code = "import imgclean.core as c; print(sorted(c.IMAGE_EXTENSIONS))"
    alone = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    after = subprocess.run([sys.executable, '-c', 'import fastai.data.transforms as t; ' + code + '; print(sorted(t.image_extensions))'],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert "'.webp'" in alone and alone.strip() == after[0] == after[1]
