"ImageCleaner and friends at the Python level: press buttons, set dropdowns, check state and cleaned.csv each time."
import json, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_class_folders
from imgclean.widgets import (CleanerState, ImageCleaner, apply_cleaning, dataset_items, losses_table, read_cleaned,
                              review_table, undo_cleaning, STATE_FILE)

NAN = float('nan')


@pytest.fixture
def root(tmp_path): return make_class_folders(tmp_path/'shapes', classes=('circle', 'square', 'triangle'), n=4)


def cleaned(root): return pd.read_csv(root/'cleaned.csv', dtype=str, keep_default_na=False)
def state(root): return json.loads((root/STATE_FILE).read_text())


def issues_table():
    "An audit issues table following the contract in imgclean.audit"
    rows = [('square/001.png', 'square', 'label', .95, 'circle', -1, NAN), ('triangle/002.png', 'triangle', 'label', .5, 'square', -1, NAN),
            ('circle/000.png', 'circle', 'label', .2, 'triangle', -1, NAN),
            ('circle/001.png', 'circle', 'exact_duplicate', 1., 'circle/001.png', 0, 1.), ('circle/002.png', 'circle', 'exact_duplicate', 1., 'circle/001.png', 0, 1.),
            ('square/002.png', 'square', 'near_duplicate', .9, 'square/002.png', 1, .93), ('triangle/003.png', 'triangle', 'near_duplicate', .9, 'square/002.png', 1, .93),
            ('square/003.png', 'square', 'dark', .7, '', -1, NAN), ('triangle/000.png', 'triangle', 'blurry', .8, '', -1, NAN)]
    return pd.DataFrame(rows, columns=['file', 'label', 'issue', 'score', 'suggestion', 'group', 'similarity'])


def test_no_file_written_until_a_decision(root):
    (root/'cleaned.csv').write_text('name,label\ncircle/000.png,circle\n')  # someone's earlier work
    ImageCleaner(root, mode='all')
    assert (root/'cleaned.csv').read_text() == 'name,label\ncircle/000.png,circle\n'  # fastai v1 rewrote it on render
    st = CleanerState(root); st.keep('circle/000.png')
    assert (root/'cleaned.csv.orig').read_text() == 'name,label\ncircle/000.png,circle\n'
    assert len(cleaned(root)) == 12


def test_buttons_and_dropdowns_update_state_and_csv_each_time(root):
    c = ImageCleaner(root, issues=issues_table(), mode='losses', batch_size=2)
    assert list(c.tiles) == ['square/001.png', 'triangle/002.png']  # highest label-issue score first
    assert c.counter.value == '<b>1–2</b> of 3 images' and c.prev.disabled and not c.next.disabled
    c.tiles['square/001.png'][2].value = True   # Delete toggle
    df = cleaned(root)
    assert len(df) == 11 and 'square/001.png' not in set(df.name)
    assert state(root)['decisions'] == {'square/001.png': {'action': 'delete'}}
    assert c.tiles['square/001.png'][1].disabled  # no relabelling a deleted tile
    c.tiles['triangle/002.png'][1].value = 'square'  # relabel dropdown
    assert cleaned(root).set_index('name').label['triangle/002.png'] == 'square'
    assert state(root)['decisions']['triangle/002.png'] == {'action': 'relabel', 'label': 'square'}
    c.next.click()
    assert list(c.tiles) == ['circle/000.png'] and c.counter.value == '<b>3–3</b> of 3 images' and c.next.disabled
    assert state(root)['positions']['losses:(all classes)'] == 2
    c.prev.click(); c.tiles['square/001.png'][2].value = False  # undelete
    assert 'square/001.png' in set(cleaned(root).name) and len(cleaned(root)) == 12
    c.tiles['triangle/002.png'][1].value = 'triangle'  # back to its own label: no decision left
    assert state(root)['decisions'] == {}
    assert cleaned(root).equals(dataset_items(root).astype(str))


def test_restart_and_resume(root):
    c = ImageCleaner(root, mode='all', batch_size=5)
    c.next.click(); first = list(c.tiles)[0]
    c.tiles[first][2].value = True
    c.tiles[list(c.tiles)[1]][1].value = 'circle'
    before = (root/'cleaned.csv').read_text()
    del c
    c2 = ImageCleaner(root, mode='all', batch_size=5)  # re-running the cell / a new kernel
    assert c2.pos == 5 and list(c2.tiles)[0] == first
    assert c2.tiles[first][2].value is True and c2.tiles[list(c2.tiles)[1]][1].value == 'circle'
    assert (root/'cleaned.csv').read_text() == before
    assert ImageCleaner(root, mode='all', batch_size=4).pos == 4  # another page size: the page holding the old position


def test_class_filter_keeps_selections(root):
    c = ImageCleaner(root, mode='all', batch_size=3)
    c.filter.value = 'square'
    assert all(n.startswith('square/') for n in c.tiles)
    c.tiles['square/000.png'][2].value = True
    c.filter.value = 'circle'; c.tiles['circle/001.png'][1].value = 'triangle'
    c.filter.value = 'square'
    assert c.tiles['square/000.png'][2].value is True  # fastai v2 forgot this on a category change
    df = cleaned(root).set_index('name')
    assert 'square/000.png' not in df.index and df.label['circle/001.png'] == 'triangle' and len(df) == 11


def test_duplicates_mode(root):
    c = ImageCleaner(root, issues=issues_table(), mode='duplicates', batch_size=5)
    groups = c.body.children
    assert len(groups) == 2 and list(c.tiles) == ['circle/001.png', 'circle/002.png', 'square/002.png', 'triangle/003.png']
    assert 'similarity: 1' in c.tiles['circle/002.png'][0].children[1].value
    c.tiles['circle/002.png'][2].value = True
    # deleted elsewhere (e.g. in the losses view): marked, not live
    CleanerState(root).delete('triangle/003.png')
    c2 = ImageCleaner(root, issues=issues_table(), mode='duplicates', batch_size=5)
    tile, dd, dl = c2.tiles['triangle/003.png']
    assert dl.value is True and dd.disabled and '(deleted)' in tile.children[1].value and 'imgclean-deleted' in tile._dom_classes
    assert set(cleaned(root).name).isdisjoint({'circle/002.png', 'triangle/003.png'})
    c2.keep_all(['square/002.png', 'triangle/003.png'])
    assert 'triangle/003.png' in set(cleaned(root).name) and 'circle/002.png' not in set(cleaned(root).name)


def test_quality_mode_and_issue_csv(root):
    issues_table().to_csv(root/'issues.csv', index=False)
    c = ImageCleaner(root, issues=root/'issues.csv', mode='quality')
    assert list(c.tiles) == ['triangle/000.png', 'square/003.png']
    assert 'blurry' in c.tiles['triangle/000.png'][0].children[1].value
    with pytest.raises(ValueError, match='audit'): ImageCleaner(root, mode='quality')
    with pytest.raises(ValueError, match='mode'): ImageCleaner(root, mode='bogus')


def test_broken_image_gets_placeholder(root):
    (root/'circle'/'bad.png').write_bytes(b'not an image at all')
    c = ImageCleaner(root, mode='all', batch_size=20)
    tile = c.tiles['circle/bad.png'][0]
    assert 'cannot load image' in tile.children[0].value and 'UnidentifiedImageError' in tile.children[0].value
    c.tiles['circle/bad.png'][2].value = True
    assert 'circle/bad.png' not in set(cleaned(root).name)


def test_read_cleaned_rejects_bad_input(root):
    w = lambda s: (root/'c.csv').write_text('name,label\n' + s)
    voc = ['circle', 'square', 'triangle']
    w('../escape.png,circle\n');  pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('leaves the dataset root')
    w('/etc/passwd,circle\n');    pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('leaves the dataset root')
    w('circle/000.png,hexagon\n'); pytest.raises(ValueError, read_cleaned, root, 'c.csv', vocab=voc).match("unknown label 'hexagon'")
    w('circle/000.png,circle\ncircle/000.png,square\n'); pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('listed more than once')
    w('circle/000.png,\n');       pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('empty label')
    w('circle/404.png,circle\ncircle/000.png,circle\n')
    pytest.raises(ValueError, read_cleaned, root, 'c.csv').match("row 2: file 'circle/404.png' does not exist")
    with pytest.warns(UserWarning, match='skipped 1 row'): df = read_cleaned(root, 'c.csv', missing='skip')
    assert list(df.name) == ['circle/000.png']
    (root/'c.csv').write_text('file,cls\na,b\n'); pytest.raises(ValueError, read_cleaned, root, 'c.csv').match("no column 'name'")
    pytest.raises(FileNotFoundError, read_cleaned, root, 'nope.csv')
    with pytest.raises(ValueError, match='unknown label'): CleanerState(root).relabel('circle/000.png', 'hexagon')
    with pytest.raises(KeyError, match='not an item'): CleanerState(root).delete('elsewhere/x.png')


def test_apply_and_undo(root):
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/001.png', 'triangle'); st.keep('triangle/000.png')
    before = read_cleaned(root, vocab=st.vocab)
    files_before = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.png'))
    moves = apply_cleaning(root)
    assert sorted(moves.action) == ['delete', 'relabel']
    assert not (root/'circle/000.png').exists() and len(list((root/'_trash').rglob('000.png'))) == 1
    relabel_dst = moves.set_index('action').dst['relabel']
    assert relabel_dst.startswith('triangle/') and (root/relabel_dst).exists()
    after = read_cleaned(root)
    assert len(after) == len(before) and after.set_index('name').label[relabel_dst] == 'triangle'
    assert dataset_items(root).shape[0] == 11  # the trash is not a class
    with pytest.raises(FileExistsError, match='undo_cleaning'): apply_cleaning(root)
    assert undo_cleaning(root) == 2
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*.png') if '_trash' not in p.parts) == files_before
    pd.testing.assert_frame_equal(read_cleaned(root), before)
    assert CleanerState(root).summary() == dict(items=12, deleted=1, relabelled=1, kept=1)


@pytest.fixture
def tiny_learner(root):
    from torch import nn
    from fastai.vision.all import ImageDataLoaders, Learner, Resize, CrossEntropyLossFlat
    dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=4, num_workers=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 3))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    learn.fit(1, 1e-3)
    return learn


def test_losses_mode_with_a_learner(root, tiny_learner):
    lt = losses_table(tiny_learner, root)
    assert len(lt) == 12 and set(lt.file) == set(dataset_items(root).name)  # train AND valid, drop_last ignored
    assert lt.is_valid.sum() == 3 and (np.diff(lt.score) <= 0).all()
    assert set(lt.label) <= {'circle', 'square', 'triangle'} and (lt.label == lt.file.str.split('/').str[0]).all()
    c = ImageCleaner(root, learner=tiny_learner, batch_size=4)
    assert list(c.tiles) == list(lt.file[:4])
    c.tiles[lt.file[0]][1].value = lt.suggestion[0] if lt.suggestion[0] != lt.label[0] else 'circle' if lt.label[0] != 'circle' else 'square'
    assert len(cleaned(root)) == 12


def test_cleaned_csv_reads_in_fastai(root):
    from fastai.vision.all import ImageDataLoaders, Resize
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/000.png', 'triangle')
    # fastai 2.8.7's default fn_col=0 does `row[0]`, which pandas 3 no longer accepts on a labelled Series (any CSV);
    # naming the columns works with every pandas
    dls = ImageDataLoaders.from_csv(root, 'cleaned.csv', folder='.', fn_col='name', label_col='label', item_tfms=Resize(16), bs=4, num_workers=0, valid_pct=0.25, seed=0)
    assert len(dls.train_ds) + len(dls.valid_ds) == 11 and list(dls.vocab) == ['circle', 'square', 'triangle']
    x, y = dls.one_batch()
    assert x.shape[1:] == (3, 16, 16)
    items = pd.concat([dls.train_ds.items, dls.valid_ds.items])
    assert items.set_index('name').label['square/000.png'] == 'triangle'


def test_review_table_contract():
    it = issues_table()
    d = review_table('duplicates', issues=it)
    assert list(d.file) == ['circle/001.png', 'circle/002.png', 'square/002.png', 'triangle/003.png']  # keeper first, groups by similarity
    assert list(review_table('losses', issues=it).file) == ['square/001.png', 'triangle/002.png', 'circle/000.png']
    with pytest.raises(ValueError, match='learner'): review_table('losses')


def test_losses_table_with_imgclean_data_loaders(root):
    "Items from imgclean.data are DataFrame rows (name relative to the root): files must come out right"
    from torch import nn
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from imgclean.data import folder_dls
    dls = folder_dls(root, size=16, bs=4, aug=False, num_workers=0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 3)), loss_func=CrossEntropyLossFlat())
    lt = losses_table(learn)
    assert sorted(lt.file) == sorted(dataset_items(root).name) and (lt.label == lt.file.str.split('/').str[0]).all()


def test_custom_items_and_nested_relabel(tmp_path):
    "A train/valid layout: labels from the parent folder; apply moves a relabelled file within its split"
    root = tmp_path/'ds'
    make_class_folders(root/'train', classes=('circle', 'square'), n=2); make_class_folders(root/'valid', classes=('circle', 'square'), n=1)
    items = dataset_items(root)
    assert list(items.label) == ['circle']*2 + ['square']*2 + ['circle', 'square'] and items.name[4] == 'valid/circle/000.png'
    c = ImageCleaner(root, mode='all', batch_size=10)
    c.tiles['valid/circle/000.png'][1].value = 'square'
    assert cleaned(root).set_index('name').label['valid/circle/000.png'] == 'square'
    moves = apply_cleaning(root)
    assert len(moves) == 1 and moves.dst[0].startswith('valid/square/000'), moves
    assert (root/moves.dst[0]).exists() and not (root/'valid/circle/000.png').exists()
