"One dataset model: every stage lists the same items with the same labels, in plain and split layouts."
import re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_class_folders  # noqa: E402
from imgclean.audit import audit  # noqa: E402
from imgclean.core import atomic_write, class_items  # noqa: E402
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


def _named_folders(root, classes, n):
    "`n` drawn shapes in each of the folders `classes` (any names), one shape kind per folder"
    from imgclean.datasets import DEMO_CLASSES, draw_shape
    for j, c in enumerate(classes):
        (root/c).mkdir(parents=True, exist_ok=True)
        for i in range(n): draw_shape(DEMO_CLASSES[j % len(DEMO_CLASSES)], 32, seed=i).save(root/c/f'{i:03d}.png')
    return root


def test_a_carriage_return_in_a_file_name_round_trips_through_every_csv(tmp_path):
    "pandas quotes newlines but not a bare CR: cleaned.csv, issues.csv and the other CSVs split such a row in two"
    import csv
    from imgclean.core import read_issues, write_issues
    from imgclean.widgets import read_cleaned
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 3)
    (root/'cat'/'000.png').rename(root/'cat'/'c\rr.png')
    st = CleanerState(root); st.delete('dog/000.png')
    with open(root/'cleaned.csv', newline='') as f: rows = list(csv.reader(f))[1:]
    assert sorted(r[0] for r in rows) == sorted(n for n in class_items(root).name if n != 'dog/000.png')
    assert 'cat/c\rr.png' in set(read_cleaned(root).name) and len(read_cleaned(root)) == 5
    issues = pd.DataFrame(dict(file=['cat/c\rr.png'], label=['cat'], issue=['label'], score=[.9], suggestion=['dog']))
    write_issues(issues, root/'issues.csv')
    assert list(read_issues(root/'issues.csv').file) == ['cat/c\rr.png']


def test_a_name_that_is_not_utf8_is_skipped_by_name_not_a_crash(tmp_path):
    "Linux allows any bytes in a name; every stage raised UnicodeEncodeError ('surrogates not allowed') without naming the file"
    import os, warnings
    from imgclean.export import image_paths
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 3)
    bad = os.fsdecode(os.fsencode(str(root/'cat')) + b'/photo\xff.png')
    Path(bad).write_bytes((root/'cat'/'000.png').read_bytes())
    with pytest.warns(UserWarning, match=r"cat/photo\\xff.png \(file name is not valid UTF-8: rename it\)"):
        items = class_items(root)
    assert len(items) == 6
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        df = verify_dataset(root, progress=False, verbose=False)
        assert len(df) == 6 and df.ok.all() and Path(bad).exists()      # left where it is, named in the warning
        CleanerState(root).delete('cat/001.png')
        assert len(pd.read_csv(root/'cleaned.csv')) == 5
    todo, skip = image_paths(root)
    enc = [(f, r) for f, r in skip if 'UTF-8' in r]
    assert len(todo) == 6 and [r for _, r in enc] == ['file name is not valid UTF-8: rename it'] and '\\xff' in str(enc[0][0])


def test_class_folders_with_spaces_round_trip_through_cleaned_csv(tmp_path):
    "' cat' and 'dog ' were stripped on reading: unknown label 'cat', file 'cat/000.png' does not exist"
    from imgclean.core import read_labels_csv
    from imgclean.widgets import read_cleaned
    root = _named_folders(tmp_path/'ds', (' cat', 'dog '), 3)
    st = CleanerState(root); st.delete(' cat/000.png'); st.relabel('dog /001.png', ' cat')
    df = read_cleaned(root)
    assert sorted(df.label) == [' cat'] * 3 + ['dog '] * 2 and ' cat/001.png' in set(df.name)
    (tmp_path/'hand.csv').write_text('name,label\n dog /002.png , cat\n')   # padding around a name written by hand still goes
    assert read_labels_csv(root, tmp_path/'hand.csv', vocab=[' cat', 'dog ']).values.tolist() == [['dog /002.png', ' cat']]


def test_a_symlink_loop_is_skipped_with_its_name(tmp_path):
    "It was RuntimeError('Symlink loop') out of every stage, and a traceback out of the CLI"
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 2)
    (root/'cat'/'a.png').symlink_to(root/'cat'/'b.png'); (root/'cat'/'b.png').symlink_to(root/'cat'/'a.png')
    with pytest.warns(UserWarning, match=r"cat/a.png \(symlink that cannot be resolved"):
        items = class_items(root)
    assert sorted(items.name) == ['cat/000.png', 'cat/001.png', 'dog/000.png', 'dog/001.png']


def test_the_quarantine_report_keeps_class_names_that_look_like_numbers(tmp_path):
    root = _named_folders(tmp_path/'ds', ('001', '002'), 2)
    for i, c in enumerate(('001', '002')):
        (root/c/'bad.png').write_bytes(b'not an image')
        verify_dataset(root, progress=False, verbose=False)
    rep = pd.read_csv(tmp_path/'ds_quarantine'/'report.csv', dtype=str, keep_default_na=False)
    assert sorted(rep.label) == ['001', '002']


def test_atomic_write_on_a_read_only_folder_raises_the_write_error(tmp_path):
    "The error a person sees is the write's own, once: the clean-up of the temporary file (refused too) does not replace it"
    from conftest import read_only
    (tmp_path/'d').mkdir()
    with read_only(tmp_path/'d') as ro:
        with pytest.raises(OSError) as e: atomic_write(ro/'x.csv', 'a')
        assert not list(ro.iterdir())
    assert e.value.__context__ is None, repr(e.value.__context__)


def test_a_class_only_in_the_detected_valid_folder_is_refused_before_training(tmp_path):
    "train/ + valid/ found without train=/valid=: a class only in valid/ was accepted and fastai failed after an epoch (KeyError 'bird')"
    from imgclean.data import folder_dls
    root = tmp_path/'ds'
    make_class_folders(root/'train', classes=('circle', 'square'), n=4)
    make_class_folders(root/'valid', classes=('circle', 'square', 'triangle'), n=2)
    with pytest.raises(ValueError, match=r"valid has classes with no training images: \['triangle'\]; add them to .*train or remove them"):
        folder_items(root)
    with pytest.raises(ValueError, match='no training images'): folder_dls(root, size=16, num_workers=0)
    (root/'valid').rename(root/'val')   # the same under val/
    with pytest.raises(ValueError, match=r"val has classes with no training images: \['triangle'\]"): folder_items(root)


def test_a_labels_csv_without_a_header_keeps_its_first_row(tmp_path):
    "A Kaggle-style CSV of rows only, read by position, lost its first row to pandas' header"
    import warnings
    from imgclean.core import read_labels_csv
    from imgclean.data import csv_items
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 3)
    rows = [f'{c}/{i:03d}.png,{c}' for c in ('cat', 'dog') for i in range(3)]
    (root/'labels.csv').write_text('\n'.join(rows) + '\n')
    with pytest.warns(UserWarning, match=r"first row 'cat/000.png','cat' names an image, so it is read as data.*header=None"):
        items = csv_items(root, 'labels.csv', fn_col=0, label_col=1, valid_pct=0)
    assert items.name.tolist() == [r.split(',')[0] for r in rows] and items.label.tolist() == ['cat'] * 3 + ['dog'] * 3
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # said: no warning
        assert len(read_labels_csv(root, 'labels.csv', 0, 1, header=None)) == 6
        assert len(read_labels_csv(root, 'labels.csv', 0, 1, header=0)) == 5   # a header on purpose
        assert len(read_labels_csv(root, 'labels.csv', '0', '1', header='None')) == 6   # as the command line passes them
        (root/'named.csv').write_text('file,class\n' + '\n'.join(rows) + '\n')
        assert len(read_labels_csv(root, 'named.csv', 0, 1)) == 6   # a real header is not data
    with pytest.warns(UserWarning, match='read as data'): assert len(read_labels_csv(root, 'labels.csv', '0', '1')) == 6
    with pytest.raises(ValueError, match=r"no column 'name'; its columns are \['cat/000.png', 'cat'\]; its first row looks like data.*header=None.*fn_col=0"):
        csv_items(root, 'labels.csv')
    (root/'labels.csv').write_text('\n'.join(rows[:2] + ['cat/404.png,cat']) + '\n')
    with pytest.raises(ValueError, match=r"row 3: file 'cat/404.png' does not exist"):   # rows counted as the file's lines
        read_labels_csv(root, 'labels.csv', 0, 1, header=None)


@pytest.mark.parametrize('encoding', ['utf-16', 'utf-16-be', 'utf-32', 'utf-8-sig'])
def test_a_labels_csv_with_a_byte_order_mark_is_read_by_it(tmp_path, encoding):
    "Excel's 'Unicode text' (UTF-16 with a BOM) was a raw UnicodeDecodeError"
    import codecs
    from imgclean.data import csv_items
    root = _named_folders(tmp_path/'ds', ('chat noir', 'café'), 2)
    text = 'name,label\n' + ''.join(f'{c}/{i:03d}.png,{c}\n' for c in ('chat noir', 'café') for i in range(2))
    bom = {'utf-16-be': codecs.BOM_UTF16_BE}.get(encoding, b'')
    (root/'labels.csv').write_bytes(bom + text.encode(encoding))
    items = csv_items(root, 'labels.csv', valid_pct=0)
    assert items.name.tolist() == ['chat noir/000.png', 'chat noir/001.png', 'café/000.png', 'café/001.png']
    assert items.label.tolist() == ['chat noir'] * 2 + ['café'] * 2


def test_a_labels_csv_in_another_encoding_is_an_error_naming_file_and_fix(tmp_path):
    from imgclean.data import csv_items
    root = _named_folders(tmp_path/'ds', ('chat', 'café'), 2)
    text = 'name,label\n' + ''.join(f'{c}/{i:03d}.png,{c}\n' for c in ('chat', 'café') for i in range(2))
    (root/'labels.csv').write_bytes(text.encode('cp1252'))
    with pytest.raises(ValueError, match=r"labels.csv is not utf-8 text \(byte b'\\xe9' at position \d+\): save it as UTF-8.*encoding='cp1252'"):
        csv_items(root, 'labels.csv')
    assert csv_items(root, 'labels.csv', encoding='cp1252', valid_pct=0).label.tolist() == ['chat'] * 2 + ['café'] * 2


def test_labels_from_a_dataframe_keep_whole_numbers_and_gaps_are_empty(tmp_path):
    "A number column with a gap is floats in pandas: class 1 became '1.0' and the gap the label 'nan'"
    from imgclean.core import read_labels_csv
    root = _named_folders(tmp_path/'ds', ('1', '2'), 2)
    df = pd.DataFrame(dict(name=['1/000.png', '1/001.png', '2/000.png', '2/001.png'], label=[1, 1, 2, 2], score=[0.5, 1, 2, None]))
    gap = df.assign(label=[1, 1, 2, None])   # labels 1.0, 1.0, 2.0, NaN
    assert read_labels_csv(root, gap.head(3)).label.tolist() == ['1', '1', '2']
    with pytest.raises(ValueError, match=r"row 5: '2/001.png' has an empty label"): read_labels_csv(root, gap)
    out = read_labels_csv(root, df)
    assert out.label.tolist() == ['1', '1', '2', '2'] and out.score.tolist() == ['0.5', '1.0', '2.0', '']


def test_a_tsv_labels_file_is_read_by_tabs(tmp_path):
    from imgclean.core import read_labels_csv
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 1)
    (root/'labels.tsv').write_text('name\tlabel\ncat/000.png\tcat\ndog/000.png\tdog\n')
    assert read_labels_csv(root, 'labels.tsv').values.tolist() == [['cat/000.png', 'cat'], ['dog/000.png', 'dog']]


def test_a_labels_csv_split_is_read_strictly_and_every_validation_class_trains(tmp_path):
    "valid_col took any value but 1/true/yes/valid for training ('Ture' trained); a CSV split or valid_pct could leave a class in validation only"
    from imgclean.data import csv_items, folder_items, stratified_split
    root = _named_folders(tmp_path/'ds', ('cat', 'dog', 'owl'), 2)
    names = [f'{c}/{i:03d}.png' for c in ('cat', 'dog') for i in range(2)]
    df = pd.DataFrame(dict(name=names, label=[n[:3] for n in names], v=['False', 'true', 'no', 'valid']))
    assert csv_items(root, df, valid_col='v').is_valid.tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match=r"column 'v' holds \['Ture'\]: use True/False"): csv_items(root, df.assign(v=['False', 'Ture', 'no', 'yes']), valid_col='v')
    owl = pd.DataFrame(dict(name=['owl/000.png'], label=['owl'], v=['1'], split=['valid']))
    with pytest.raises(ValueError, match=r"\(its validation rows\) has classes with no training images: \['owl'\]"):
        csv_items(root, pd.concat([df, owl], ignore_index=True), valid_col='v')
    split = pd.concat([df.assign(split=['train', 'valid'] * 2), owl], ignore_index=True).drop(columns='v')
    with pytest.raises(ValueError, match=r"no training images: \['owl'\]"): csv_items(root, split)
    assert not stratified_split(['a', 'a', 'b'], valid_pct=0.9)[2]   # a class of one image trains
    one_owl = root/'one'; _named_folders(one_owl, ('cat', 'dog'), 3); _named_folders(one_owl, ('owl',), 1)
    assert folder_items(one_owl, valid_pct=0.6).query("label == 'owl'").is_valid.tolist() == [False]


def test_a_labels_csv_header_with_spaces_reads_and_semicolons_are_named(tmp_path):
    from imgclean.core import read_labels_csv
    root = _named_folders(tmp_path/'ds', ('cat', 'dog'), 1)
    (root/'spaced.csv').write_text('name , label\ncat/000.png,cat\n')
    assert read_labels_csv(root, 'spaced.csv').values.tolist() == [['cat/000.png', 'cat']]
    (root/'semi.csv').write_text('name;label\ncat/000.png;cat\n')
    with pytest.raises(ValueError, match=r"no column 'name'; its columns are \['name;label'\]; its fields are separated by ';': save it comma-separated"):
        read_labels_csv(root, 'semi.csv')


@pytest.mark.parametrize('data, says', [(b'', 'labels.csv is empty: write one row per image'),
                                        (b'name,label\n', 'labels.csv has no rows under its header'),
                                        (b'name,label\na/000.png,a,x\nb/000.png,b,y\n', 'its rows have more fields than its header'),
                                        ('name,label\na/000.png,a\n'.encode('utf-16-le'), "UTF-16 without a byte-order mark; pass encoding='utf-16-le'"),
                                        (b'name,label\na/000.png,a\n\x00\x00', 'holds NUL bytes, so it is no UTF-8 text')])
def test_an_odd_labels_csv_is_an_error_naming_the_file_and_the_fix(tmp_path, data, says):
    "Before: pandas' 'No columns to parse from file', 'no images found ... one folder per class', 'file a/000.png does not exist' (a row's "
    "first field taken as index), garbled column names, 'embedded null byte'; none named the file"
    from imgclean.data import csv_items
    root = _named_folders(tmp_path/'ds', ('a', 'b'), 2)
    (root/'labels.csv').write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(says)): csv_items(root, 'labels.csv')
    (root/'labels.csv').write_text('name,label\na/000.png,a\nb/000.png,b\n')
    with pytest.raises(ValueError, match=re.escape("encoding='bogus' (--encoding) is no encoding Python knows")): csv_items(root, 'labels.csv', encoding='bogus')
