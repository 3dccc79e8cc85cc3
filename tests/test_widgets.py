"ImageCleaner and friends at the Python level: press buttons, set dropdowns, press keys; check the state file and cleaned.csv each time."
import json, os, shutil, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_class_folders, read_only
from imgclean.core import write_issues
from imgclean.widgets import (APPLY_LOG, STATE_FILE, TRASH, CleanerState, DatasetFormatter, FormattedDataset, ImageCleaner,
                              apply_cleaning, dataset_items, losses_table, read_cleaned, review_table, undo_cleaning)

NAN = float('nan')
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path): return make_class_folders(tmp_path/'shapes', classes=('circle', 'square', 'triangle'), n=4)


def cleaned(root): return pd.read_csv(root/'cleaned.csv', dtype=str, keep_default_na=False)
def state(root): return json.loads((root/STATE_FILE).read_text())
def files(root): return sorted(p.relative_to(root).as_posix() for p in root.rglob('*.png') if not {TRASH, '_trash'} & set(p.relative_to(root).parts))


def issues_table(warning=None):
    "An audit issues table following core.ISSUE_COLUMNS"
    rows = [('square/001.png', 'square', 'label', .95, 'circle', -1, NAN, 'out-of-fold p(circle)=0.95'),
            ('triangle/002.png', 'triangle', 'label', .5, 'square', -1, NAN, ''),
            ('circle/000.png', 'circle', 'label', .2, 'triangle', -1, NAN, ''),
            ('circle/001.png', 'circle', 'exact_duplicate', 1., 'circle/001.png', 0, 1., ''),
            ('circle/002.png', 'circle', 'exact_duplicate', 1., 'circle/001.png', 0, 1., ''),
            ('square/002.png', 'square', 'near_duplicate', .9, 'square/002.png', 1, .93, ''),
            ('triangle/003.png', 'triangle', 'near_duplicate', .9, 'square/002.png', 1, .93, ''),
            ('square/003.png', 'square', 'dark', .7, '', -1, NAN, 'mean brightness 0.07'),
            ('triangle/000.png', 'triangle', 'blurry', .8, '', -1, NAN, '')]
    if warning: rows.append(('', '', 'warning', NAN, '', -1, NAN, warning))
    return pd.DataFrame(rows, columns=['file', 'label', 'issue', 'score', 'suggestion', 'group', 'similarity', 'note'])


def test_no_file_written_until_a_decision(root):
    (root/'cleaned.csv').write_text('name,label\ncircle/000.png,circle\n')  # someone's earlier work
    ImageCleaner(root, mode='all')
    assert (root/'cleaned.csv').read_text() == 'name,label\ncircle/000.png,circle\n'  # fastai v1 rewrote it on render
    CleanerState(root).keep('circle/000.png')
    assert (root/'cleaned.csv.orig').read_text() == 'name,label\ncircle/000.png,circle\n'
    assert len(cleaned(root)) == 12


def test_buttons_and_dropdowns_update_state_and_csv_each_time(root):
    c = ImageCleaner(root, issues=issues_table(), mode='losses', batch_size=2)
    assert list(c.tiles) == ['square/001.png', 'triangle/002.png']  # highest label-issue score first
    assert c.counter.value == '<b>1–2</b> of 3 images' and c.prev.disabled and not c.next.disabled
    assert 'cleaned.csv</code>: 12 rows' in c.summary.value and len(cleaned(root)) == 12   # written on opening: retrain needs no click
    c.tiles['square/001.png'].dl.value = True                      # Delete toggle
    df = cleaned(root)
    assert len(df) == 11 and 'square/001.png' not in set(df.name)
    assert state(root)['decisions'] == {'square/001.png': {'action': 'delete'}}
    assert c.tiles['square/001.png'].dd.disabled and 'imgclean-deleted' in c.tiles['square/001.png'].box._dom_classes
    c.tiles['triangle/002.png'].dd.value = 'square'                # relabel menu
    assert cleaned(root).set_index('name').label['triangle/002.png'] == 'square'
    assert state(root)['decisions']['triangle/002.png'] == {'action': 'relabel', 'label': 'square'}
    assert "→ <b class='imgclean-new'>square</b>" in c.tiles['triangle/002.png'].info.value
    assert 'cleaned.csv</code>: 11 rows' in c.summary.value and 'Reviewed <b>2</b> of 12' in c.summary.value
    c.next.click()
    assert list(c.tiles) == ['circle/000.png'] and c.counter.value == '<b>3–3</b> of 3 images' and c.next.disabled
    assert c._key().startswith('losses:') and state(root)['positions'][c._key()] == 2   # the key names the ranking too
    c.prev.click(); c.tiles['square/001.png'].dl.value = False     # undelete
    assert 'square/001.png' in set(cleaned(root).name) and len(cleaned(root)) == 12
    c.tiles['triangle/002.png'].dd.value = 'triangle'              # back to its own label: reviewed, kept
    assert state(root)['decisions'] == {'triangle/002.png': {'action': 'keep'}}
    assert cleaned(root).equals(dataset_items(root).astype(str))


def test_one_click_accepts_the_suggestion_and_keys_do_the_rest(root):
    c = ImageCleaner(root, issues=issues_table(), mode='losses', batch_size=8)
    t = c.tiles['square/001.png']
    assert t.ok.description == 'Accept: circle'
    t.ok.click()                                                    # 1 click per relabel with a right suggestion
    assert state(root)['decisions'] == {'square/001.png': {'action': 'relabel', 'label': 'circle'}}
    assert c.cursor == 0
    c.press('ArrowRight'); c.press('a')                             # triangle/002.png -> square, cursor moves on
    assert state(root)['decisions']['triangle/002.png'] == {'action': 'relabel', 'label': 'square'} and c.cursor == 2
    c.press('d')                                                    # circle/000.png deleted
    assert state(root)['decisions']['circle/000.png'] == {'action': 'delete'}
    assert c.cursor == 2; c.press('ArrowLeft'); c.press('1')       # digit = class number: circle
    assert state(root)['decisions']['triangle/002.png'] == {'action': 'relabel', 'label': 'circle'}
    c.press('k'); assert state(root)['decisions']['circle/000.png'] == {'action': 'delete'} and c.cursor == 2  # on circle/000, deleted: k leaves it so
    c.press('e'); assert 'circle/000.png' in c.preview.children[0].children[0].value
    c.press('Escape'); assert c.preview.children == ()
    c._on_msg(dict(type='enlarge', index=1)); assert c.cursor == 1 and 'triangle/002.png' in c.preview.children[0].children[0].value
    c._on_msg(dict(type='key', key='d')); assert state(root)['decisions']['triangle/002.png'] == {'action': 'delete'}
    c.press('x'); c._on_msg(dict(type='nonsense')); c._on_msg(dict(type='enlarge', index='7; rm -rf'))  # ignored
    assert 'imgclean-current' in c.tiles[c.order[c.cursor]].box._dom_classes


def test_duplicate_group_costs_one_click(root):
    c = ImageCleaner(root, issues=issues_table(), mode='duplicates', batch_size=5)
    assert len(c.body.children) == 2 and list(c.tiles) == ['circle/001.png', 'circle/002.png', 'square/002.png', 'triangle/003.png']
    assert 'similarity 1.000' in c.tiles['circle/002.png'].info.value
    c.tiles['triangle/003.png'].ok.click()                         # "Keep only this": the whole group in one click
    assert state(root)['decisions'] == {'triangle/003.png': {'action': 'keep'}, 'square/002.png': {'action': 'delete'}}
    c.cursor = 0; c.press('a')                                      # accept the suggested keeper of group 0, go to the next group
    d = state(root)['decisions']
    assert d['circle/001.png'] == {'action': 'keep'} and d['circle/002.png'] == {'action': 'delete'} and c.order[c.cursor] == 'square/002.png'
    keep_all = c.body.children[1].children[0].children[1]
    keep_all.click()
    assert state(root)['decisions']['square/002.png'] == {'action': 'keep'}


def test_filters_and_worst_first(root):
    (root/'train').mkdir()
    c = ImageCleaner(root, issues=issues_table(), mode='all', batch_size=20)
    assert c.order[:3] == ['square/001.png', 'triangle/002.png', 'circle/000.png']   # label issues first, worst first
    c.f_issue.value = 'dark'; assert c.order == ['square/003.png']
    assert "title='mean brightness 0.07'" in c.tiles['square/003.png'].info.value   # the note explains the score
    c.f_issue.value = '(all)'; c.f_pred.value = 'square'; assert c.order == ['triangle/002.png']
    c.f_pred.value = '(all)'; c.f_score.value = '0.85'; assert c.order == ['square/001.png', 'circle/001.png', 'circle/002.png', 'square/002.png', 'triangle/003.png']
    c.f_score.value = 'abc'; assert 'not a number' in c.message.value
    c.f_score.value = ''; c.f_label.value = 'triangle'; assert c.order == ['triangle/002.png', 'triangle/003.png', 'triangle/000.png', 'triangle/001.png']  # findings first, then the rest
    c.tiles['triangle/000.png'].kp.click(); c.f_hide.value = True
    assert 'triangle/000.png' not in c.order
    assert c.f_split.layout.display == 'none'     # no split folders here: no split filter


def test_split_filter(tmp_path):
    root = tmp_path/'ds'
    make_class_folders(root/'train', classes=('circle', 'square'), n=2); make_class_folders(root/'valid', classes=('circle', 'square'), n=1)
    c = ImageCleaner(root, mode='all', batch_size=10)
    c.f_split.value = 'valid'
    assert c.order == ['valid/circle/000.png', 'valid/square/000.png']


def test_issues_path_and_warnings(root):
    with pytest.raises(FileNotFoundError, match=r"run audit\("): ImageCleaner(root, issues=root/'issues.csv', mode='duplicates')
    write_issues(issues_table(warning='the model behind this audit is weak (out-of-fold accuracy 0.35, chance 0.33)'), root/'issues.csv')
    c = ImageCleaner(root, issues=root/'issues.csv', mode='all')
    assert 'the model behind this audit is weak' in c.widget.children[0].value
    assert '' not in set(c.rows.file) and len(c.rows) == 12 and (c.rows.issue[:9] != '').all() and (c.rows.issue[9:] == '').all()
    assert '(9 with findings, first)' in c.counter.value
    c.f_issue.value = '(any issue)'; assert len(c.units()) == 9
    df = issues_table(); df.attrs['warnings'] = ['weak model']
    assert 'weak model' in ImageCleaner(root, issues=df, mode='quality').widget.children[0].value
    with pytest.raises(TypeError, match='issues must be'): ImageCleaner(root, issues=3)
    with pytest.raises(ValueError, match='audit'): ImageCleaner(root, mode='quality')
    with pytest.raises(ValueError, match='mode'): ImageCleaner(root, mode='bogus')
    with pytest.raises(TypeError, match='ImageCleaner takes a dataset folder'): ImageCleaner([1, 2])


def test_size_adapts_and_names_break_between_words(root):
    c = ImageCleaner(root, mode='all')
    assert c.size == 96                                 # 32 px images: shown at 96 px
    assert ImageCleaner(root, mode='all', size=150).size == 150
    (root/'circle'/'a_very_long-file.name.png').write_bytes((root/'circle/000.png').read_bytes())
    c = ImageCleaner(root, mode='all', batch_size=20)
    v = c.tiles['circle/a_very_long-file.name.png'].info.value
    assert 'a_<wbr>very_<wbr>long-<wbr>file.<wbr>name.<wbr>png' in v


def test_restart_and_resume(root):
    c = ImageCleaner(root, mode='all', batch_size=5)
    c.next.click(); first = c.order[0]
    c.tiles[first].dl.value = True
    c.tiles[c.order[1]].dd.value = 'circle'
    before = (root/'cleaned.csv').read_text()
    del c
    c2 = ImageCleaner(root, mode='all', batch_size=5)  # re-running the cell
    assert c2.pos == 5 and c2.order[0] == first
    assert c2.tiles[first].dl.value is True and c2.tiles[c2.order[1]].dd.value == 'circle'
    assert (root/'cleaned.csv').read_text() == before
    assert ImageCleaner(root, mode='all', batch_size=4).pos == 4


def test_two_cleaners_share_one_state(root):
    "The issue's reproduction: two cleaners opened, a click in each, paging in one: nothing lost, both show both"
    a, b = ImageCleaner(root, mode='all', batch_size=12), ImageCleaner(root, mode='all', batch_size=3)
    assert a.state is b.state
    a.tiles['circle/000.png'].dl.value = True
    b.tiles['circle/001.png'].dd.value = 'square'
    b.next.click(); b.f_label.value = 'square'; b.f_label.value = '(all)'   # paging and filtering save nothing over decisions
    assert state(root)['decisions'] == {'circle/000.png': {'action': 'delete'}, 'circle/001.png': {'action': 'relabel', 'label': 'square'}}
    df = cleaned(root).set_index('name')
    assert 'circle/000.png' not in df.index and df.label['circle/001.png'] == 'square'
    assert a.tiles['circle/001.png'].dd.value == 'square'          # live in the other cleaner
    assert a.summary.value.split(' · this view')[0] == b.summary.value.split(' · this view')[0]


def test_other_process_changes_are_merged(root):
    c = ImageCleaner(root, mode='all', batch_size=12)
    c.tiles['circle/000.png'].dl.value = True
    code = ("import sys; sys.path.insert(0, %r)\nfrom imgclean.widgets import CleanerState\n"
            "CleanerState(%r).relabel('square/000.png', 'triangle')" % (str(ROOT), str(root)))
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
    c.tiles['circle/001.png'].dl.value = True          # merged on top of the other process's change
    assert c.tiles['square/000.png'].dd.value == 'triangle'
    assert state(root)['decisions'] == {'circle/000.png': {'action': 'delete'}, 'square/000.png': {'action': 'relabel', 'label': 'triangle'},
                                        'circle/001.png': {'action': 'delete'}}


def test_broken_image_gets_placeholder(root):
    (root/'circle'/'bad.png').write_bytes(b'not an image at all')
    c = ImageCleaner(root, mode='all', batch_size=20)
    img = c.tiles['circle/bad.png'].img
    assert 'cannot load image' in img.value and 'UnidentifiedImageError' in img.value
    c.tiles['circle/bad.png'].dl.value = True
    assert 'circle/bad.png' not in set(cleaned(root).name)


def test_read_cleaned_rejects_bad_input(root):
    w = lambda s: (root/'c.csv').write_text('name,label\n' + s)
    w('../escape.png,circle\n');  pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('leaves the dataset root')
    w('/etc/passwd,circle\n');    pytest.raises(ValueError, read_cleaned, root, 'c.csv').match('leaves the dataset root')
    w('circle/000.png,hexagon\n'); pytest.raises(ValueError, read_cleaned, root, 'c.csv').match("unknown label 'hexagon'")  # labels checked by default
    w('circle/000.png,../../x\n'); pytest.raises(ValueError, read_cleaned, root, 'c.csv').match("unknown label")
    assert len(read_cleaned(root, 'c.csv', vocab=['../../x'])) == 1   # an explicit vocab is the caller's choice
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


def test_hostile_state_file_is_never_applied(root, tmp_path):
    secret = tmp_path/'secret.txt'; secret.write_text('do not pull me in')
    (root/STATE_FILE).write_text(json.dumps(dict(decisions={
        '../secret.txt': dict(action='relabel', label='circle'), 'circle/000.png': dict(action='relabel', label='../escape'),
        'circle/001.png': dict(action='relabel', label='_trash'), 'circle/002.png': 'delete', 'circle/003.png': dict(action='rm -rf'),
        '/etc/passwd': dict(action='delete'), 'square/000.png': dict(action='delete')}, positions={'x': 'y'}, generation='z')))
    with pytest.warns(UserWarning, match=r'6 decision\(s\) in .* set aside'):
        st = CleanerState(root)
    assert st.decisions == {'square/000.png': {'action': 'delete'}}
    moves = apply_cleaning(root)
    assert list(moves.src) == ['square/000.png'] and secret.read_text() == 'do not pull me in'
    assert not (root.parent/'escape').exists() and files(root) == sorted(set(dataset_items(root).name))
    assert set(read_cleaned(root).label) == {'circle', 'square', 'triangle'}
    undo_cleaning(root)
    (root/STATE_FILE).write_text('{"decisions": [1, 2]}')
    with pytest.raises(ValueError, match='not an ImageCleaner state file'): CleanerState(root).refresh()
    (root/STATE_FILE).write_text('{nope')
    with pytest.raises(ValueError, match='not valid JSON'): CleanerState(root).refresh()


def test_hostile_apply_log_moves_nothing(root, tmp_path):
    outside = tmp_path/'outside.png'; outside.write_bytes(b'x')
    ino = os.lstat(root/'circle/000.png')
    good = dict(src='circle/000.png', dst='_trash/T/circle/000.png', action='delete', ino=ino.st_ino, dev=ino.st_dev)
    bad = [dict(good, src='../outside.png'), dict(good, dst='../../x.png'), dict(good, dst='square/000_9.png'),
           dict(good, action='relabel', dst='_x/000.png'), dict(good, action='chmod'), dict(good, ino='1'),
           dict(good, src=str(outside))]
    before = files(root)
    for m in bad:
        (root/APPLY_LOG).write_text(json.dumps(dict(status='applied', trash='_trash', moves=[m], decisions={})))
        with pytest.raises(ValueError): undo_cleaning(root)
        assert files(root) == before and outside.read_bytes() == b'x'
    (root/APPLY_LOG).write_text(json.dumps(dict(status='applied', trash='deleted', moves=[], decisions={})))
    with pytest.raises(ValueError, match="use a name starting with '.'"): undo_cleaning(root)
    # a well-formed log whose recorded file is not the one on disk: an apply (resumed) does not move it
    shutil_src = dict(good, ino=good['ino'] + 12345)
    (root/APPLY_LOG).write_text(json.dumps(dict(status='moving', trash='_trash', moves=[shutil_src], decisions={}, generation=0)))
    with pytest.raises(FileNotFoundError, match='not the file this move recorded'): apply_cleaning(root)
    assert files(root) == before
    # an undo puts back the plain file at the place the log names even when rewritten since (verify's resize), never over another file
    (root/'_trash/T/circle').mkdir(parents=True); os.rename(root/'circle/000.png', root/'_trash/T/circle/000.png')
    (root/APPLY_LOG).write_text(json.dumps(dict(status='applied', trash='_trash', moves=[shutil_src], decisions={})))
    assert undo_cleaning(root) == 1 and files(root) == before


def test_review_after_an_apply_then_undo_keeps_the_later_clicks(root, capsys):
    "A second round of review after an apply: the undo of either round loses no click made since"
    st = CleanerState(root); st.delete('circle/000.png')
    apply_cleaning(root)
    st.delete('square/000.png'); st.relabel('triangle/000.png', 'circle')   # the second round's clicks
    assert undo_cleaning(root) == 1                         # undoes the first apply; the clicks made since stay
    assert (root/'circle/000.png').exists()
    assert st.decisions == {'circle/000.png': dict(action='delete'), 'square/000.png': dict(action='delete'),
                            'triangle/000.png': dict(action='relabel', label='circle')}
    assert len(apply_cleaning(root)) == 3                   # round 1 again, with round 2
    st.delete('circle/001.png'); assert len(apply_cleaning(root)) == 1   # a third round, on top of it
    st.keep('square/001.png')
    assert undo_cleaning(root) == 1 and 'earlier one(s) can be undone too' in capsys.readouterr().out
    assert st.decisions == {'circle/001.png': dict(action='delete'), 'square/001.png': dict(action='keep')}
    assert undo_cleaning(root) == 3 and (root/'triangle/000.png').exists() and (root/'square/000.png').exists()
    assert st.action('triangle/000.png') == 'relabel' and st.action('square/001.png') == 'keep'
    assert undo_cleaning(root) == 0                          # nothing left to undo


def test_undo_after_the_trash_was_emptied_finishes(root):
    "Files deleted from the trash by hand cannot come back; the rest does, with its decisions, and no undo loop follows"
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/001.png', 'triangle')
    apply_cleaning(root)
    shutil.rmtree(root/TRASH)
    with pytest.warns(UserWarning, match='1 of 2 files could not be put back'): assert undo_cleaning(root) == 1
    assert (root/'square/001.png').exists() and st.decisions == {'square/001.png': dict(action='relabel', label='triangle')}
    assert not (root/APPLY_LOG).exists() and undo_cleaning(root) == 0
    assert len(apply_cleaning(root)) == 1 and not ImageCleaner(root).warnings   # no "run undo_cleaning again" loop


def test_trash_must_stay_outside_the_classes(root):
    CleanerState(root).delete('circle/000.png')
    with pytest.raises(ValueError, match="use a name starting with '.'"): apply_cleaning(root, trash='deleted')
    with pytest.raises(ValueError, match='inside the dataset root'): apply_cleaning(root, trash='../bin')
    assert not (root/APPLY_LOG).exists() and (root/'circle/000.png').exists()
    with pytest.warns(UserWarning, match="fastai's get_image_files .* walks every folder not starting with '.'"):
        moves = apply_cleaning(root, trash='_deleted')
    assert moves.dst[0].startswith('_deleted/') and 'circle/000.png' not in set(read_cleaned(root).name)
    assert set(dataset_items(root).label) == {'circle', 'square', 'triangle'}


def test_colliding_relabels_keep_both(tmp_path):
    root = tmp_path/'bears'
    for c in ('grizzly', 'black', 'teddy'):
        (root/c).mkdir(parents=True)
        for i in (1, 2): (root/c/f'{i:08d}.jpg').write_bytes(f'{c} {i}'.encode())
    before = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*.jpg')}
    st = CleanerState(root, items=pd.DataFrame(dict(name=sorted(before), label=[n.split('/')[0] for n in sorted(before)])))
    st.relabel('grizzly/00000001.jpg', 'teddy'); st.relabel('black/00000001.jpg', 'teddy')
    st.relabel('teddy/00000002.jpg', 'black'); st.relabel('black/00000002.jpg', 'teddy')   # a swap too
    moves = apply_cleaning(root)
    assert moves.dst.nunique() == 4
    after = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*.jpg')}
    assert sorted(after.values()) == sorted(before.values())                   # nothing overwritten
    assert [sum(1 for n in after if n.startswith(c + '/')) for c in ('teddy', 'black', 'grizzly')] == [4, 1, 1]
    assert undo_cleaning(root) == 4
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*.jpg')} == before


def test_symlinks_in_and_out(root, tmp_path):
    (tmp_path/'elsewhere.png').write_bytes((root/'circle/000.png').read_bytes())
    os.symlink(tmp_path/'elsewhere.png', root/'circle/out.png')            # leaves the root: not an item
    (root/'shared').mkdir(); os.rename(root/'square/003.png', root/'shared_003.png')
    os.symlink('../shared_003.png', root/'square/003.png')                  # an internal link: an item
    with pytest.warns(UserWarning, match='not items'): st = CleanerState(root)
    assert 'circle/out.png' not in st.label_of and 'square/003.png' in st.label_of
    with pytest.raises(KeyError, match='not an item'): st.delete('circle/out.png')
    st.relabel('square/003.png', 'triangle'); st.delete('square/002.png')
    moves = apply_cleaning(root).set_index('src')
    new = root/moves.dst['square/003.png']
    assert new.is_symlink() and new.read_bytes() == (root/'shared_003.png').read_bytes()
    assert (tmp_path/'elsewhere.png').exists() and (root/'circle/out.png').is_symlink()
    log = json.loads((root/APPLY_LOG).read_text())
    m = next(m for m in log['moves'] if 'link' in m)
    (root/APPLY_LOG).write_text(json.dumps(dict(log, moves=[dict(m, link='/etc/passwd')])))   # a hostile log: a link out
    with pytest.raises(ValueError, match='does not lead to'): undo_cleaning(root)
    (root/APPLY_LOG).write_text(json.dumps(log))
    undo_cleaning(root)
    assert os.readlink(root/'square/003.png') == '../shared_003.png' and not new.exists()


def test_apply_with_nothing_to_do_says_so(root, capsys):
    CleanerState(root).keep('circle/000.png')
    moves = apply_cleaning(root)
    assert len(moves) == 0 and 'nothing to apply' in capsys.readouterr().out
    assert not (root/APPLY_LOG).exists()
    CleanerState(root).delete('circle/000.png'); apply_cleaning(root)   # and the next apply is not blocked


def test_apply_and_undo(root):
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/001.png', 'triangle'); st.keep('triangle/000.png')
    before = read_cleaned(root)
    files_before = files(root)
    moves = apply_cleaning(root)
    assert sorted(moves.action) == ['delete', 'relabel']
    assert not (root/'circle/000.png').exists() and len(list((root/TRASH).rglob('000.png'))) == 1
    relabel_dst = moves.set_index('action').dst['relabel']
    assert relabel_dst == 'triangle/001_1.png' and (root/relabel_dst).exists()
    after = read_cleaned(root)
    assert len(after) == len(before) and after.set_index('name').label[relabel_dst] == 'triangle'
    assert st.decisions == {} and st.generation == 1
    assert dataset_items(root).shape[0] == 11  # the trash is not a class
    assert len(apply_cleaning(root)) == 0                 # applied already: nothing more to do
    assert undo_cleaning(root) == 2
    assert files(root) == files_before
    pd.testing.assert_frame_equal(read_cleaned(root), before)
    assert CleanerState(root).summary() == dict(items=12, reviewed=3, kept=1, deleted=1, relabelled=1)
    assert undo_cleaning(root) == 0                       # nothing to undo: says so
    with pytest.raises(FileNotFoundError, match='nothing to undo'): undo_cleaning(root, log=root/'my_log.json')


def test_open_cleaners_follow_apply_and_undo(root):
    c = ImageCleaner(root, mode='all', batch_size=12)
    c.tiles['circle/000.png'].dl.value = True; c.tiles['square/001.png'].dd.value = 'circle'
    apply_cleaning(root)
    assert 'circle/001_1.png' in c.order and 'square/001.png' not in c.order and 'circle/000.png' not in c.order
    assert 'follows them' in c.message.value
    c.tiles['circle/001_1.png'].dl.value = True          # a click after apply lands on the new name
    df = cleaned(root)
    assert 'circle/001_1.png' not in set(df.name) and all((root/n).exists() for n in df.name)
    undo_cleaning(root)
    assert 'square/001.png' in c.order and 'circle/000.png' in c.order
    assert c.tiles['circle/000.png'].dl.value is True and c.tiles['square/001.png'].dd.value == 'circle'
    assert all((root/n).exists() for n in cleaned(root).name)


def test_click_after_apply_in_another_process(root):
    "A cleaner whose files were moved by another process: the click is refused with one line, the view follows"
    c = ImageCleaner(root, mode='all', batch_size=12)
    c.tiles['circle/000.png'].dl.value = True; c.tiles['square/001.png'].dd.value = 'circle'
    code = "import sys; sys.path.insert(0, %r)\nfrom imgclean.widgets import apply_cleaning\napply_cleaning(%r)" % (str(ROOT), str(root))
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
    c.tiles['circle/001.png'].dl.value = True
    assert 'Not saved' in c.message.value and 'circle/001.png' not in state(root)['decisions']
    assert 'circle/001_1.png' in c.order                 # the view now shows the new names
    c.tiles['circle/001.png'].dl.value = True            # the click again: saved
    assert state(root)['decisions'] == {'circle/001.png': {'action': 'delete'}}
    assert all((root/n).exists() for n in cleaned(root).name)


def test_cleaned_csv_never_lists_a_missing_file(root):
    st = CleanerState(root)
    (root/'circle/003.png').unlink()                     # removed by hand
    st.delete('circle/000.png')
    assert 'circle/003.png' not in set(cleaned(root).name)
    read_cleaned(root)                                    # reads without a missing-file error


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
    assert c.order == list(lt.file[:4])
    wrong = lt[lt.suggestion != lt.label]
    if len(wrong):
        f = wrong.file.iloc[0]
        c2 = ImageCleaner(root, learner=tiny_learner, batch_size=12)
        c2.tiles[f].ok.click()
        assert cleaned(root).set_index('name').label[f] == wrong.suggestion.iloc[0]
    assert len(cleaned(root)) == 12 if (root/'cleaned.csv').exists() else True


def test_fastai_v1_cleaning_api(root, tiny_learner):
    "The lesson-2 (fastai v1) cleaning cells, unchanged"
    path = root
    ds, idxs = DatasetFormatter().from_toplosses(tiny_learner)
    assert isinstance(ds, FormattedDataset) and len(ds) == 12 and sorted(idxs) == list(range(12))
    lt = losses_table(tiny_learner)
    assert [ds.files[i] for i in idxs[:3]] == list(lt.file[:3])          # highest loss first
    c = ImageCleaner(ds, idxs, path)
    assert c.bs == 5 and c.order == list(lt.file[:5])
    c.tiles[c.order[0]].dl.value = True
    ds, idxs = DatasetFormatter().from_similars(tiny_learner)
    assert len(idxs) % 2 == 0 and len(idxs) >= 2 and all(a != b for a, b in zip(idxs[0::2], idxs[1::2]))
    sims = [s for _, _, s in ds.pairs]
    assert sims == sorted(sims, reverse=True)
    d = ImageCleaner(ds, idxs, path, duplicates=True)
    assert len(d.body.children) == 5 and all(len(g.children[1].children) == 2 for g in d.body.children)
    first = d.order[1]; d.tiles[first].ok.click()                        # keep the second of the first pair
    df = pd.read_csv(path/'cleaned.csv')
    assert list(df.columns) == ['name', 'label'] and first in set(df.name) and d.order[0] not in set(df.name)
    assert lt.file[0] not in set(df.name) or lt.file[0] == first          # the first cleaner's deletion is kept
    with pytest.raises(TypeError, match="fastai v1's"): ImageCleaner(3, idxs, path)
    assert ImageCleaner(ds, idxs, path, duplicates=True, start=2).pos == 0   # start is a row; page 0 holds row 2 of 5


def test_cleaned_csv_reads_in_fastai(root):
    from fastai.vision.all import ImageDataLoaders, Resize
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/000.png', 'triangle')
    dls = ImageDataLoaders.from_csv(root, 'cleaned.csv', folder='.', fn_col='name', label_col='label', item_tfms=Resize(16), bs=4, num_workers=0, valid_pct=0.25, seed=0)
    assert len(dls.train_ds) + len(dls.valid_ds) == 11 and list(dls.vocab) == ['circle', 'square', 'triangle']
    items = pd.concat([dls.train_ds.items, dls.valid_ds.items])
    assert items.set_index('name').label['square/000.png'] == 'triangle'


def test_fastai_never_sees_the_trash_nor_our_files(root):
    "After apply_cleaning, fastai's get_image_files (DataBlock, from_folder) lists exactly the kept images, in the real classes"
    from fastai.vision.all import CategoryBlock, DataBlock, ImageBlock, ImageDataLoaders, Resize, get_image_files, parent_label
    st = CleanerState(root); st.delete('circle/000.png'); st.delete('square/001.png'); st.relabel('triangle/000.png', 'circle')
    apply_cleaning(root)
    assert (root/'cleaned.csv').exists() and (root/STATE_FILE).exists() and (root/APPLY_LOG).exists()
    assert sorted(p.relative_to(root).as_posix() for p in get_image_files(root)) == sorted(read_cleaned(root).name)
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label)
    dsets = db.datasets(root)
    assert list(dsets.vocab) == ['circle', 'square', 'triangle'] and len(dsets.train) + len(dsets.valid) == 10
    dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=2, num_workers=0)
    assert list(dls.vocab) == ['circle', 'square', 'triangle'] and len(dls.train_ds) + len(dls.valid_ds) == 10


def test_an_apply_log_of_the_old_underscore_trash_still_undoes_and_the_old_trash_is_reported(root):
    st = CleanerState(root); st.delete('circle/000.png')
    with pytest.warns(UserWarning, match='fastai'): apply_cleaning(root, trash='_trash')   # as before the default changed
    assert (root/'_trash').is_dir() and json.loads((root/APPLY_LOG).read_text())['trash'] == '_trash'
    st.delete('square/000.png')
    with pytest.warns(UserWarning, match='holds images an earlier apply_cleaning deleted'): apply_cleaning(root)
    assert undo_cleaning(root) == 1 and undo_cleaning(root) == 1
    assert (root/'circle/000.png').exists() and (root/'square/000.png').exists()


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
    c.tiles['valid/circle/000.png'].dd.value = 'square'
    assert cleaned(root).set_index('name').label['valid/circle/000.png'] == 'square'
    moves = apply_cleaning(root)
    assert len(moves) == 1 and moves.dst[0] == 'valid/square/000_1.png', moves
    assert (root/moves.dst[0]).exists() and not (root/'valid/circle/000.png').exists()


def test_click_while_another_process_holds_the_dataset(root):
    "A long apply elsewhere holds the lock: a click gives a one-line message after a few seconds, not a frozen kernel"
    import time
    c = ImageCleaner(root, mode='all', batch_size=12)
    code = ("import sys, time; from filelock import FileLock\n"
            f"l = FileLock({str(root/STATE_FILE) + '.lock'!r}); l.acquire(); print('held', flush=True); time.sleep(20)")
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        t = time.time(); c.tiles['circle/000.png'].dl.value = True
        assert time.time() - t < 15 and 'the dataset is locked' in c.message.value
        assert c.tiles['circle/000.png'].dl.value is False   # the button shows what was saved: nothing
        t = time.time(); c.next.click() if not c.next.disabled else c.show(0)   # paging does not hang either
        assert time.time() - t < 10
    finally: p.kill(); p.wait(10)
    assert not (root/STATE_FILE).exists() or 'circle/000.png' not in state(root)['decisions']
    c.tiles['circle/000.png'].dl.value = True            # the lock is free again: the click lands
    assert state(root)['decisions'] == {'circle/000.png': {'action': 'delete'}}


def _other_kernel(root, code):
    "Run `code` with `st = CleanerState(root)` in another Python process, as a second notebook would"
    subprocess.run([sys.executable, '-c', f"from imgclean.widgets import CleanerState; st = CleanerState({str(root)!r}); {code}"],
                   check=True, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)})


def test_files_and_classes_added_while_a_cleaner_is_open(root):
    "New images and a new class folder after a cleaner opened: its clicks keep them in cleaned.csv, another kernel's relabel into the class holds and is applied"
    c = ImageCleaner(root, mode='all', batch_size=20)
    make_class_folders(root, classes=('star',), n=2); shutil.copy(root/'circle/000.png', root/'circle/extra.png')
    _other_kernel(root, "st.relabel('circle/001.png', 'star')")
    c.tiles['square/000.png'].dl.value = True                  # a click in the view opened before
    df = cleaned(root).set_index('name')
    assert {'star/000.png', 'star/001.png', 'circle/extra.png'} <= set(df.index) and df.label['circle/001.png'] == 'star'
    assert 'square/000.png' not in df.index and c.tiles['circle/001.png'].dd.value == 'star'
    c.tiles['circle/002.png'].dd.value = 'star'                # every tile of the old view offers the new class
    assert c.message.value == '' and state(root)['decisions']['circle/002.png'] == dict(action='relabel', label='star')
    moves = apply_cleaning(root)
    assert sorted(moves.action) == ['delete', 'relabel', 'relabel'] and not (root/'circle/001.png').exists()
    assert len(list((root/'star').glob('*.png'))) == 4


def test_a_new_class_seen_by_a_second_cleaner_of_the_kernel(root):
    a = ImageCleaner(root, mode='all', batch_size=20)
    make_class_folders(root, classes=('star',), n=1)
    b = ImageCleaner(root, mode='all', batch_size=20)
    b.tiles['circle/000.png'].dd.value = 'star'                # the first cleaner's tiles follow (no TraitError)
    assert a.tiles['circle/000.png'].dd.value == 'star' and 'Reviewed <b>1</b>' in b.summary.value


def test_a_relative_root_survives_a_chdir(root, monkeypatch):
    "A cleaner opened on a relative path (as in the course) keeps writing to its dataset after %cd"
    monkeypatch.chdir(root.parent)
    c = ImageCleaner(root.name, mode='all', batch_size=4)
    monkeypatch.chdir(root/'circle')
    c.tiles['circle/000.png'].dl.value = True
    c.next.click()
    assert state(root)['decisions'] == {'circle/000.png': dict(action='delete')} and not (root/'circle'/root.name).exists()
    assert all(not isinstance(t.img, type(c.message)) for t in c.tiles.values())   # thumbnails still load (no "cannot load image")


def test_each_cleaned_csv_asked_for_is_written(root):
    ImageCleaner(root, mode='all')
    c = ImageCleaner(root, mode='all', csv='cleaned_v2.csv')
    c.tiles['circle/000.png'].dl.value = True
    assert 'circle/000.png' not in set(pd.read_csv(root/'cleaned_v2.csv').name)


def test_a_click_on_an_unreadable_state_file_says_not_saved(root):
    c = ImageCleaner(root, mode='all')
    (root/STATE_FILE).write_text('{"decisions": {"circle/0')      # truncated by hand or by a full disk
    c.tiles['circle/000.png'].dl.value = True
    assert 'Not saved' in c.message.value and 'not valid JSON' in c.message.value
    assert c.tiles['circle/000.png'].dl.value is False        # the toggle goes back: nothing was saved


def test_keep_only_acts_on_the_pair_clicked(root):
    "fastai v1 pairs share images: Keep only this in the second pair keeps it and deletes that pair's other image"
    files = ['circle/000.png', 'circle/001.png', 'circle/002.png', 'square/000.png']
    ds = FormattedDataset(root, files, ['circle', 'circle', 'circle', 'square'], ['circle', 'square', 'triangle'],
                          pairs=[(0, 1, .99), (0, 2, .98), (2, 3, .97)])
    c = ImageCleaner(ds, [0, 1, 0, 2, 2, 3], root, duplicates=True)
    pair = c.body.children[1].children[1].children              # the second pair: circle/000, circle/002
    pair[0].children[2].click()                               # its first tile's "Keep only this"
    assert state(root)['decisions'] == {'circle/000.png': dict(action='keep'), 'circle/002.png': dict(action='delete')}
    third = c.body.children[2].children[1].children[0]        # circle/002 again, in the third pair
    assert third is c.tiles['circle/002.png'].twin.box and 'imgclean-deleted' in third._dom_classes   # every tile of an image shows its state


def test_hide_reviewed_never_skips_a_page(tmp_path):
    "With 'hide reviewed' the rows just reviewed leave the list: Next, the keys and Previous go on to the images not shown yet"
    root = make_class_folders(tmp_path/'ds', classes=('circle', 'square', 'star', 'triangle'), n=4)
    page = lambda c: sorted({n.split('/')[0][:2] for n in c.order})
    c = ImageCleaner(root, mode='all', batch_size=4); c.f_hide.value = True
    for n in list(c.order): c.tiles[n].kp.click()
    c.next.click(); assert page(c) == ['sq']                    # Keep on each tile, then Next
    for _ in range(4): c.press('k')
    assert page(c) == ['st']                                    # the keys move on after the last tile
    c.press('k'); c.press('k'); c.press('PageDown')             # half a page reviewed: the next page starts after it
    assert c.order == ['triangle/000.png', 'triangle/001.png', 'triangle/002.png', 'triangle/003.png'] and c.counter.value.startswith('<b>3–6</b> of 6')
    c.press('PageUp'); assert c.order[:2] == ['star/002.png', 'star/003.png']
    st = CleanerState(root)
    for n in list(st.decisions): st.reset(n)
    c.f_hide.value = False; c.f_hide.value = True
    c.next.click(); c.next.click(); assert page(c) == ['st']
    for n in ['square/000.png', 'square/001.png', 'square/002.png', 'square/003.png']: st.keep(n)   # reviewed elsewhere meanwhile
    c.prev.click(); assert page(c) == ['ci']                    # Previous shows the page before, not this one again
    c.f_hide.value = False
    c.next.click(); c.next.click(); c.prev.click(); assert page(c) == ['sq']  # without the filter: plain pages


def test_labels_from_a_csv_learner(tmp_path):
    "All images in one folder, labels from a CSV: both cleaner forms take names, labels, split and classes from the learner"
    import shutil
    from torch import nn
    from fastai.vision.all import ImageDataLoaders, Learner, Resize, CrossEntropyLossFlat
    root = make_class_folders(tmp_path/'ds', n=4); (root/'imgs').mkdir()
    rows = []
    for c in ('circle', 'square', 'triangle'):
        for f in sorted((root/c).iterdir()): shutil.move(f, root/'imgs'/f'{c}_{f.name}'); rows.append((f'imgs/{c}_{f.name}', c))
        (root/c).rmdir()
    df = pd.DataFrame(rows, columns=['name', 'label'])
    dls = ImageDataLoaders.from_df(df, root, fn_col='name', label_col='label', valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=4, num_workers=0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 3)), loss_func=CrossEntropyLossFlat())
    for form in ('new', 'v1'):
        for p in [*root.glob('cleaned.csv*'), *root.glob('.imgclean*')]: p.unlink()
        c = ImageCleaner(root, learner=learn, batch_size=12) if form == 'new' else ImageCleaner(*DatasetFormatter().from_toplosses(learn), root, batch_size=12)
        t = c.tiles['imgs/square_001.png']
        assert [v for _, v in t.dd.options] == ['circle', 'square', 'triangle'] and t.dd.value == 'square', form
        t.kp.click()
        assert cleaned(root).set_index('name').label.to_dict() == dict(rows), form
        t.dd.value = 'circle'
        assert cleaned(root).set_index('name').label['imgs/square_001.png'] == 'circle'
        assert sorted(c.state.items.split.value_counts().items()) == [('train', 9), ('valid', 3)]
    with pytest.raises(TypeError, match=r"audit\(path, learner='export.pkl'\)"): ImageCleaner(root, learner='export.pkl')


def test_summary_closes_cleaned_csv(root):
    "The summary counts the rows of cleaned.csv without leaving the file open (no ResourceWarning)"
    import gc
    c = ImageCleaner(root, mode='all', batch_size=4)
    c.tiles[c.order[0]].kp.click()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); c._update_summary(); gc.collect()
    assert [str(o.message) for o in w if issubclass(o.category, ResourceWarning)] == []
    assert '12 rows' in c.summary.value


def test_batch_size_must_be_a_positive_whole_number(root):
    for bs in (0, -1, 2.5):
        with pytest.raises(ValueError, match='tiles per page'): ImageCleaner(root, mode='all', batch_size=bs)
    assert ImageCleaner(root, mode='all', batch_size=np.int64(3)).bs == 3


def test_undo_on_a_missing_folder_says_so(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='is not a folder'): undo_cleaning(tmp_path/'no/such')
    assert undo_cleaning(tmp_path) == 0 and 'nothing to undo' in capsys.readouterr().out   # a dataset never applied


def test_label_key_on_a_deleted_tile_does_nothing(root):
    "A deleted tile's dropdown is disabled: its label keys are too (they would take the deletion back)"
    c = ImageCleaner(root, mode='all', batch_size=4)
    c.press('d'); c.press('p')                                  # delete the first tile, back onto it
    c.press('2')
    assert state(root)['decisions'] == {'circle/000.png': {'action': 'delete'}} and 'is deleted' in c.message.value
    assert c.cursor == 0 and c.tiles['circle/000.png'].dd.disabled
    c.press('d'); c.press('p'); c.press('2')                    # undeleted: the key labels it
    assert state(root)['decisions'] == {'circle/000.png': {'action': 'relabel', 'label': 'square'}} and c.cursor == 1


def test_accept_and_keep_on_a_deleted_tile_leave_it_deleted(root):
    "A deleted image comes back only when its deletion is taken back: Accept (a, Enter) and Keep (k) on it do nothing and say so"
    c = ImageCleaner(root, issues=issues_table(), mode='losses', batch_size=4)
    name = c.order[0]
    c.press('d'); c.press('p')                                  # delete the first tile, back onto it
    for key in ('a', 'Enter', 'k'):
        c.press(key)
        assert state(root)['decisions'] == {name: {'action': 'delete'}}, key
        assert 'is deleted' in c.message.value and c.cursor == 0, key
    t = c.tiles[name]
    assert t.kp.disabled and t.ok.disabled and t.dd.disabled   # the buttons say it too
    assert c.keep(name) is False and c.accept(name) is False and state(root)['decisions'] == {name: {'action': 'delete'}}
    c.press('d'); c.press('p')                                  # the deletion taken back: the buttons work again
    t = c.tiles[name]
    assert not (t.kp.disabled or t.ok.disabled)
    c.press('a'); assert state(root)['decisions'] == {name: {'action': 'relabel', 'label': 'circle'}}
    dup = ImageCleaner(root, issues=issues_table(), mode='duplicates')   # 'Keep only this' on a deleted copy: an explicit choice
    dup.keep_only('circle/002.png', 0)
    t = dup.tiles['circle/001.png']
    assert t.kp.disabled and not t.ok.disabled
    t.ok.click()
    assert (state(root)['decisions']['circle/001.png'], state(root)['decisions']['circle/002.png']) == ({'action': 'keep'}, {'action': 'delete'})


def test_second_round_with_a_learner_retrained_on_cleaned_csv(root):
    "Retrained on cleaned.csv, a learner's labels are not the folders and it lacks the deleted images: their decisions still hold"
    from torch import nn
    from fastai.vision.all import ImageDataLoaders, Learner, Resize, CrossEntropyLossFlat
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/001.png', 'circle')
    before = cleaned(root)
    dls = ImageDataLoaders.from_csv(root, 'cleaned.csv', folder='.', fn_col='name', label_col='label', item_tfms=Resize(16), bs=4, num_workers=0, valid_pct=0.25, seed=0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 3)), loss_func=CrossEntropyLossFlat())
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)                # no "decision(s) ignored"
        c = ImageCleaner(root, learner=learn, batch_size=12)
    assert 'circle/000.png' not in c.order and st.is_deleted('circle/000.png') and st.label('square/001.png') == 'circle'
    c.tiles['square/002.png'].kp.click()
    after = cleaned(root)                                      # now with the learner's split, which a retrain from it keeps
    pd.testing.assert_frame_equal(after[['name', 'label']], before)
    assert set(after.split) == {'train', 'valid'} and (after.split == 'valid').sum() == len(dls.valid_ds)


def test_a_split_layout_keeps_its_splits_through_cleaned_csv(tmp_path, capsys):
    "train/valid/test folders: cleaned.csv says each image's split, and retraining from it keeps validation apart and the test set out"
    from imgclean.data import csv_dls
    root = tmp_path/'ds'
    for s, n in (('train', 4), ('valid', 2), ('test', 2)): make_class_folders(root/s, n=n)
    c = ImageCleaner(root, mode='all', batch_size=50)
    c.tiles['train/circle/000.png'].dl.value = True
    df = cleaned(root)
    assert list(df.columns) == ['name', 'label', 'split'] and set(df.split) == {'train', 'valid', 'test'}
    dls = csv_dls(root, 'cleaned.csv', size=16, bs=4, num_workers=0, aug=False)
    rel = lambda ds: {Path(o).relative_to(root).parts[0] for o in ds.items}
    assert rel(dls.train_ds) == {'train'} and rel(dls.valid_ds) == {'valid'} and len(dls.train_ds) == 11
    assert '6 rows of cleaned.csv are in the test split' in capsys.readouterr().out


def test_a_hand_edited_cleaned_csv_is_kept_before_it_is_rewritten(root):
    st = CleanerState(root); st.delete('circle/000.png')
    edited = (root/'cleaned.csv').read_text().replace('square/001.png,square', 'square/001.png,triangle')
    (root/'cleaned.csv').write_text(edited)                    # someone fixed a label in a text editor
    with pytest.warns(UserWarning, match='edited outside the cleaner'): st.delete('circle/001.png')
    bak = list(root.glob('cleaned.csv.edited-*'))
    assert len(bak) == 1 and bak[0].read_text() == edited and 'circle/001.png' not in set(cleaned(root).name)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); st.keep('circle/002.png')   # our own writes are not mistaken for edits


def test_findings_about_files_changed_since_the_audit_are_left_out(root):
    "A flagged image replaced by another under its name: its finding (and a pair it was in) is not shown, and the cleaner says why"
    from imgclean.core import file_hash, write_issues
    it = issues_table().assign(hash=lambda d: [file_hash(root/f) if f else '' for f in d.file])
    write_issues(it, root/'issues.csv')
    (root/'square/001.png').write_bytes((root/'circle/003.png').read_bytes())   # the image flagged as 'circle' is now another one
    (root/'square/002.png').write_bytes((root/'circle/003.png').read_bytes())   # one of a near-duplicate pair, too
    c = ImageCleaner(root, issues=root/'issues.csv', mode='all', batch_size=20)
    assert 'square/001.png' not in set(c._filtered()[lambda d: d.issue != ''].file)
    assert any('2 images changed since the audit' in w for w in c.warnings)
    d = ImageCleaner(root, issues=root/'issues.csv', mode='duplicates')
    assert [set(u.file) for u in d.units()] == [{'circle/001.png', 'circle/002.png'}]   # the pair missing an image is gone
    with pytest.raises(KeyError, match='not among the rows'): c.accept('nope.png')


def test_files_moved_by_other_tools_reach_cleaned_csv_when_a_cleaner_opens_or_pages(root):
    "fastai's cleaner loop (unlink, move) after our clicks: cleaned.csv kept listing the unlinked file until the next click"
    import gc
    c = ImageCleaner(root, mode='all', batch_size=4)
    c.tiles['circle/000.png'].dl.value = True
    del c; gc.collect()                                            # a kernel restart
    (root/'square/000.png').unlink(); shutil.move(root/'circle/001.png', root/'triangle/001b.png')
    c = ImageCleaner(root, mode='all', batch_size=4)              # reopened: no click yet
    df = cleaned(root)
    assert set(df.name) == set(files(root)) - {'circle/000.png'} and df.set_index('name').label['triangle/001b.png'] == 'triangle'
    (root/'square/001.png').unlink()                               # and with the cleaner open: a page turn is enough
    c.next.click()
    assert 'square/001.png' not in set(cleaned(root).name) and len(cleaned(root)) == len(files(root)) - 1
    (root/'cleaned.csv').write_text('name,label\nsquare/002.png,circle\n')   # a hand edit is left alone until a click
    (root/'square/002.png').unlink(); c.prev.click()
    assert (root/'cleaned.csv').read_text() == 'name,label\nsquare/002.png,circle\n'


def test_a_decision_about_a_file_moved_away_is_said_in_the_cleaner(root):
    "It was a raw UserWarning with a source line in the notebook's stderr, and the deletion looked lost"
    import gc
    c = ImageCleaner(root, mode='all', batch_size=4)
    c.tiles['circle/000.png'].dl.value = True
    del c; gc.collect()
    shutil.move(root/'circle/000.png', root/'square/000b.png')     # another tool moved the file the user deleted
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        c = ImageCleaner(root, mode='all', batch_size=4)
    assert any("circle/000.png" in w and 'set aside' in w for w in c.warnings)
    assert "circle/000.png" in c.widget.children[0].value          # shown at the top of the widget
    shutil.move(root/'square/000b.png', root/'circle/000.png')     # moved back: the deletion counts again
    c.next.click()
    assert 'circle/000.png' not in set(cleaned(root).name) and state(root)['decisions'] == {'circle/000.png': {'action': 'delete'}}


def test_a_page_position_belongs_to_its_ranking(root):
    "Two notebooks ranking by different models: the second opened at the first one's page (positions were per mode)"
    a = issues_table(); b = a.assign(score=1 - a.score)            # two models' rankings of the same images
    ca = ImageCleaner(root, issues=a, mode='losses', batch_size=1)
    ca.next.click(); ca.next.click()
    cb = ImageCleaner(root, issues=b, mode='losses', batch_size=1)
    assert cb.pos == 0
    assert ImageCleaner(root, issues=a, mode='losses', batch_size=1).pos == 2   # the same ranking reopened: where it was left


def test_a_kill_between_the_state_file_and_cleaned_csv_is_repaired_on_open(root):
    "Killed after the state file and before cleaned.csv: the CSV trained on a deleted image until the next click, which then called it a hand edit"
    st = CleanerState(root)
    st.delete('circle/000.png'); before = (root/'cleaned.csv').read_bytes()
    st.delete('circle/001.png'); after = (root/'cleaned.csv').read_bytes()
    (root/'cleaned.csv').write_bytes(before)                       # what the kill leaves: the new state, the old CSV
    _other_kernel(root, "import warnings; warnings.simplefilter('error'); print(st.summary())")   # a new kernel opens it
    assert (root/'cleaned.csv').read_bytes() == after
    _other_kernel(root, "import warnings; warnings.simplefilter('error'); st.delete('square/000.png')")
    assert not list(root.glob('cleaned.csv.*')) and 'square/000.png' not in set(cleaned(root).name)


def test_keep_only_keeps_a_relabel_of_the_image_kept(root):
    "Relabel an image, then 'Keep only this' on its duplicate group: the relabel was replaced by a plain keep"
    d = ImageCleaner(root, issues=issues_table(), mode='duplicates', batch_size=4)
    CleanerState(root).relabel('square/002.png', 'circle')
    d.keep_only('square/002.png', 1)
    assert state(root)['decisions'] == {'square/002.png': {'action': 'relabel', 'label': 'circle'}, 'triangle/003.png': {'action': 'delete'}}
    d.keep_only('circle/001.png', 0)                               # an image with no decision: kept as it is
    assert state(root)['decisions']['circle/001.png'] == {'action': 'keep'} and state(root)['decisions']['circle/002.png'] == {'action': 'delete'}


def test_quality_mode_shows_an_image_once_with_all_its_findings(root):
    t = issues_table()
    t = pd.concat([t, t[t.issue == 'dark'].assign(issue='blurry', score=.6, note='')], ignore_index=True)   # square/003.png: dark and blurry
    c = ImageCleaner(root, issues=t, mode='quality', batch_size=8)
    assert sorted(c.order) == ['square/003.png', 'triangle/000.png'] and c.counter.value.endswith('of 2 images')
    assert c.rows.set_index('file').issue['square/003.png'] == 'dark, blurry'


def test_findings_about_files_moved_since_the_audit_are_said(root):
    "An issues.csv from before apply_cleaning: the rows of moved files vanished from the cleaner without a word"
    write_issues(issues_table(), root/'issues.csv')
    st = CleanerState(root); st.relabel('square/001.png', 'circle'); st.delete('circle/000.png')
    apply_cleaning(root)
    c = ImageCleaner(root, issues=root/'issues.csv', mode='losses')
    assert any('2 images of the audit are no longer in the dataset' in w for w in c.warnings)


def test_from_similars_on_a_training_set_smaller_than_a_batch(root):
    "fastai's default bs=64 on a small dataset: the training DataLoader has no batch, and from_similars asked it for one for the size"
    from torch import nn
    from fastai.vision.all import ImageDataLoaders, Learner, Resize, CrossEntropyLossFlat
    dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, item_tfms=Resize(16), num_workers=0)   # bs 64 > 9 images
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3*16*16, 3)), loss_func=CrossEntropyLossFlat())
    ds, idxs = DatasetFormatter().from_similars(learn)
    assert len(ds) == 12 and len(idxs) >= 2



def test_a_dataset_that_cannot_be_written_still_opens(root, monkeypatch):
    "Writing cleaned.csv when a cleaner opens must not stop a review of a read-only dataset (or one an apply holds)"
    import imgclean.widgets as w
    def read_only(fn, data, fsync=False): raise PermissionError(13, 'Permission denied', str(fn))
    monkeypatch.setattr(w, 'atomic_write', read_only)
    c = ImageCleaner(root, mode='all', batch_size=4)
    assert len(c.order) == 4 and not (root/'cleaned.csv').exists()
    c.tiles[c.order[0]].dl.value = True                            # a click says it could not be saved
    assert 'Not saved' in c.message.value


@pytest.fixture
def read_only_root(root):
    with read_only(root) as ro: yield ro


def test_a_truly_read_only_dataset_opens_and_keeps_its_decisions_beside(read_only_root, tmp_path, monkeypatch):
    "A read-only dataset (Kaggle's input folder): the cleaner failed at open with OSError [Errno 30] creating its lock file in the root"
    ro, wd = read_only_root, tmp_path/'work'
    wd.mkdir(); monkeypatch.chdir(wd)
    with pytest.raises(OSError): (ro/'probe').write_bytes(b'')   # truly read-only
    c = ImageCleaner(ro, mode='all', batch_size=4)
    assert any(f'{ro} is read-only: the decisions are kept in {wd/(ro.name + "_cleaning")}' in w for w in c.warnings), c.warnings
    first = c.order[0]
    c.tiles[first].dl.value = True
    assert 'Not saved' not in c.message.value, c.message.value
    side = wd/f'{ro.name}_cleaning'
    kept = pd.read_csv(side/'cleaned.csv')
    assert first not in set(kept.name) and len(kept) == 11 and (ro/kept.name[0]).is_file()   # names relative to the dataset
    assert json.loads((side/STATE_FILE).read_text())['decisions'][first] == {'action': 'delete'}
    assert len(read_cleaned(ro)) == 11   # read from beside the dataset, as csv_dls(path) reads it
    with pytest.raises(PermissionError, match='is read-only: apply_cleaning moves files inside it'): apply_cleaning(ro)


def test_clicks_do_not_list_the_dataset_again_unless_files_changed(root, monkeypatch):
    "Each click wrote cleaned.csv and the state file into the root, changing its time, so the next click listed every file again (1 s a click at 20k images)"
    import imgclean.widgets as w
    c = ImageCleaner(root, mode='all', batch_size=4)
    calls = []
    real = w.class_items
    monkeypatch.setattr(w, 'class_items', lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b = c.order[:2]
    c.tiles[a].dl.value = True; c.next.click(); c.prev.click(); c.relabel(b, 'square' if c.state.label_of[b] != 'square' else 'circle')
    assert calls == [], f'{len(calls)} listings for 4 clicks'
    (root/'circle'/'new.png').write_bytes((root/'circle'/'000.png').read_bytes())   # a file added by another tool: seen at the next click
    c.keep(c.order[2])
    assert len(calls) == 1 and 'circle/new.png' in set(cleaned(root).name)


def test_undo_after_a_refetch_of_the_same_bytes_finishes(root):
    "A refetch put the same image back where undo would restore it: the undo counts it as back and finishes (tryG/5)"
    st = CleanerState(root); st.delete('circle/000.png'); st.relabel('square/001.png', 'triangle')
    data = {n: (root/n).read_bytes() for n in ('circle/000.png', 'square/001.png')}
    apply_cleaning(root)
    for n, b in data.items(): (root/n).write_bytes(b)            # as download_images(..., refetch_removed=True) does
    undo_cleaning(root)
    assert not (root/APPLY_LOG).exists() and {n: (root/n).read_bytes() for n in data} == data
    assert not (root/'triangle/001_1.png').exists() and not list((root/TRASH).rglob('*.png'))   # no second copy left behind
    assert st.decisions['square/001.png'] == dict(action='relabel', label='triangle')


def test_undo_onto_a_different_file_says_what_to_do(root):
    st = CleanerState(root); st.relabel('square/001.png', 'triangle')
    apply_cleaning(root)
    (root/'square/001.png').write_bytes(b'another file')
    with pytest.raises(FileExistsError, match=r"move square/001.png out of the dataset .* then run undo_cleaning\(path\) again"): undo_cleaning(root)
    assert (root/'triangle/001_1.png').exists()              # nothing lost
    os.unlink(root/'square/001.png')
    assert undo_cleaning(root) == 1 and (root/'square/001.png').exists() and not (root/APPLY_LOG).exists()


def test_undo_moves_back_a_file_rewritten_in_place(root):
    "verify_dataset(max_size=...) rewrote a relabelled file (new inode): it is still the user's file, and goes back (tryG/17)"
    from PIL import Image
    st = CleanerState(root); st.relabel('square/001.png', 'triangle')
    apply_cleaning(root)
    fn = root/'triangle/001_1.png'; Image.open(fn).resize((8, 8)).save(root/'tmp.png'); os.replace(root/'tmp.png', fn)   # as verify's atomic write
    with warnings.catch_warnings(): warnings.simplefilter('error'); assert undo_cleaning(root) == 1
    assert Image.open(root/'square/001.png').size == (8, 8) and not fn.exists()
    assert st.decisions == {'square/001.png': dict(action='relabel', label='triangle')}


def test_accept_in_a_duplicate_group_never_overrides_the_users_choice(root):
    "d on the suggested keeper, then Enter on its pair: nothing changes and the status line says why (tryG/3a)"
    issues = issues_table()
    c = ImageCleaner(root, issues=issues, mode='duplicates', batch_size=5)
    st = c.state
    c.delete('circle/001.png')                                 # the suggested keeper of group 0: the user prefers circle/002.png
    assert c.accept('circle/002.png') is False
    assert st.decisions == {'circle/001.png': dict(action='delete')} and 'circle/001.png is deleted: Accept' in c.message.value
    c.keep('square/002.png'); c.relabel('triangle/003.png', 'circle')   # group 1: the user decided both
    assert c.accept('square/002.png') is False and 'triangle/003.png is relabelled' in c.message.value
    assert st.action('triangle/003.png') == 'relabel'
    c.delete('circle/001.png', on=False); assert c.accept('circle/002.png') is not False   # no decision in the way: accept works
    assert st.decisions['circle/002.png'] == dict(action='delete')


def test_keep_in_a_stale_kernel_leaves_another_kernels_deletion(root):
    "Another process deleted an image after this cleaner read the state: Keep and Accept here leave it deleted (tryG/3c)"
    c = ImageCleaner(root, issues=issues_table(), mode='losses', batch_size=8)
    _other_kernel(root, "st.delete('square/001.png'); st.delete('triangle/002.png')")
    assert c.keep('square/001.png') is False and 'square/001.png is deleted: Keep leaves it deleted' in c.message.value
    assert c.accept('triangle/002.png') is False
    assert state(root)['decisions'] == {'square/001.png': dict(action='delete'), 'triangle/002.png': dict(action='delete')}
    assert c.state.is_deleted('square/001.png')              # the view follows the file now


@pytest.mark.parametrize('trash', ['.', './', '.imgclean_cache', '.imgclean_cache/trash'])
def test_trash_that_is_the_root_or_our_cache_is_a_clear_error(root, trash):
    "tryG/15: trash='.' was an IndexError; '.imgclean_cache' mixed deleted images with the cache"
    CleanerState(root).delete('circle/000.png')
    with pytest.raises(ValueError, match=f"trash={trash!r}"): apply_cleaning(root, trash=trash)
    assert (root/'circle/000.png').exists() and not (root/APPLY_LOG).exists()


def test_an_old_underscore_trash_with_images_is_reported_when_a_cleaner_opens(root):
    "tryG/2: images left in _trash by an older version are said at open, not only by a new apply; empty folders say nothing"
    CleanerState(root).delete('circle/000.png')
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); apply_cleaning(root, trash='_trash')
    assert any('_trash holds images' in w for w in ImageCleaner(root).warnings)
    undo_cleaning(root)                                      # leaves _trash/<stamp>/circle/, empty
    assert (root/'_trash').is_dir() and not any('_trash holds images' in w for w in ImageCleaner(root).warnings)
    CleanerState(root).delete('square/000.png')
    with warnings.catch_warnings(): warnings.simplefilter('error'); apply_cleaning(root)   # no warning about an empty _trash
