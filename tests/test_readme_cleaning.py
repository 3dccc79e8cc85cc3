"""The README's cleaning code, run as written (issue 16), with a user's clicks between its lines.

Each line of README_CLEANING is executed verbatim with `from imgclean.all import *` names, on a small dataset and a
learner built by imgclean (not pretrained). `audit` writes `path/'issues.csv'` by default, which the cleaners then read.
"""
import ast, shutil, warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_class_folders

README_CLEANING = """\
ImageCleaner(path, learner=learn)                                  # top losses: relabel or delete each image
issues = audit(path, learner=learn)                                # writes path/'issues.csv'
ImageCleaner(path, issues=path/'issues.csv', mode='duplicates')    # groups: keep one
ImageCleaner(path, issues=path/'issues.csv', mode='all')           # every audit finding
apply_cleaning(path); undo_cleaning(path)
dls = csv_dls(path, 'cleaned.csv')
"""


def run_line(line, ns):
    "Execute one line as a notebook cell would; return the value of a final expression"
    tree = ast.parse(line)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, '<readme>', 'exec'), ns)
    return eval(compile(ast.Expression(last.value), '<readme>', 'eval'), ns) if last else None


@pytest.mark.timeout(600)
def test_readme_cleaning_runs_as_written(tmp_path):
    assert README_CLEANING in (Path(__file__).parents[1]/'README.md').read_text()   # the README's own block, verbatim
    import imgclean.all as A
    path = make_class_folders(tmp_path/'shapes', classes=('circle', 'square', 'triangle'), n=6, size=32)
    shutil.copy(path/'circle/000.png', path/'circle/copy.png')           # an exact duplicate for the duplicates view
    dls = A.folder_dls(path, size=32, bs=4, aug=False, num_workers=0)
    learn = A.make_learner(dls, arch='resnet18', pretrained=False)
    learn.fit(1, 1e-3)
    ns = {n: getattr(A, n) for n in A.__all__}
    ns.update(path=path, learn=learn)
    lines = README_CLEANING.splitlines()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        top = run_line(lines[0], ns)
        assert isinstance(top, A.ImageCleaner) and top.mode == 'losses' and len(top.rows) == 19
        worst = next(n for n in top.order if n not in ('circle/000.png', 'circle/copy.png'))
        top.tiles[worst].dl.value = True                                   # the user deletes the worst image
        run_line(lines[1], ns)
        assert (path/'issues.csv').exists() and isinstance(ns['issues'], pd.DataFrame)
        dup = run_line(lines[2], ns)
        assert {'circle/000.png', 'circle/copy.png'} <= set(dup.rows.file)
        dup.tiles['circle/copy.png'].ok.click()                           # keep the copy, delete the original: one click
        every = run_line(lines[3], ns)
        found = every.rows[every.rows.issue != '']
        assert set(found.file) == set(ns['issues'].file) - {''} and list(found.index) == list(range(len(found)))   # findings first (rows with file '' describe the dataset: shown as warnings)
        before = sorted(p.relative_to(path).as_posix() for p in path.rglob('*.png'))
        run_line(lines[4], ns)
        assert sorted(p.relative_to(path).as_posix() for p in path.rglob('*.png') if '.imgclean_trash' not in p.parts) == before
        run_line(lines[5], ns)
    d = ns['dls']
    assert len(d.train_ds) + len(d.valid_ds) == 19 - 2                     # the two deletions are restored as decisions
    df = pd.read_csv(path/'cleaned.csv')
    assert 'circle/000.png' not in set(df.name) and all((path/n).exists() for n in df.name)
