"""apply_cleaning/undo_cleaning survive a kill -9 (issue 13): a 500-file apply killed half-way is undone (or resumed)
byte for byte, and an undo killed half-way can be re-run."""
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path

import pytest

from imgclean.core import file_hash
from imgclean.widgets import APPLY_LOG, TRASH, CleanerState, apply_cleaning, undo_cleaning

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ('black', 'grizzly', 'teddy', 'brown', 'panda')


def make_dataset(root, n=100):
    "5 classes x `n` files named as fastai names downloads (00000000.jpg... in every folder, so relabels collide)"
    rng = __import__('random').Random(0)
    for c in CLASSES:
        (root/c).mkdir(parents=True)
        for i in range(n): (root/c/f'{i:08d}.jpg').write_bytes(rng.randbytes(200 + i))
    return root


def hashes(root):
    "{name: hash} of every file outside the trash, plus the files in the trash"
    out = {p.relative_to(root).as_posix(): file_hash(p) for p in root.rglob('*.jpg') if TRASH not in p.relative_to(root).parts}
    return out, sorted(p.name for p in (root/TRASH).rglob('*.jpg')) if (root/TRASH).exists() else []


def decide(root):
    "Half the files deleted, the other half relabelled to the next class: 500 moves"
    st = CleanerState(root)
    ups = {}
    for k, c in enumerate(CLASSES):
        for i in range(100):
            n = f'{c}/{i:08d}.jpg'
            ups[n] = dict(action='delete') if i % 2 else dict(action='relabel', label=CLASSES[(k + 1) % len(CLASSES)])
    st.change(ups)
    return st


def run_killed(root, what, after):
    "Run `what` ('apply' or 'undo') in a subprocess, slowed to ~5 ms a move, and kill -9 it after `after` moves"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from imgclean.widgets import apply_cleaning, undo_cleaning\n"
            "def tick(m): print('moved', flush=True); time.sleep(0.005)\n"
            f"{'apply_cleaning' if what == 'apply' else 'undo_cleaning'}({str(root)!r}, on_move=tick)\n")
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    seen, deadline = 0, time.time() + 120
    while seen < after and time.time() < deadline:
        if p.stdout.readline().startswith('moved'): seen += 1
    os.kill(p.pid, signal.SIGKILL); p.wait(10)
    assert seen == after, f"the {what} did only {seen} moves"
    return p.returncode


@pytest.mark.timeout(600)
def test_kill_during_apply_then_undo_restores_every_file(tmp_path):
    root = make_dataset(tmp_path/'bears')
    before, _ = hashes(root)
    decide(root)
    assert run_killed(root, 'apply', 200) == -signal.SIGKILL
    log = json.loads((root/APPLY_LOG).read_text())
    assert log['status'] == 'moving' and len(log['moves']) == 500   # the whole plan was on disk before the first move
    from imgclean.widgets import ImageCleaner
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter('always'); c = ImageCleaner(root, mode='all')
    assert 'an apply_cleaning was interrupted' in c.widget.children[0].value   # said in the widget, with what to run
    assert not [w for w in said if 'ignored' in str(w.message)]        # not as decisions "never applied": the log finishes them
    mid, trash = hashes(root)
    assert 0 < len(trash) < 250 or len(mid) < 500                     # killed half-way indeed
    assert undo_cleaning(root) == 500
    after, _ = hashes(root)
    assert after == before                                             # every file back, byte-identical (hashes)
    assert not (root/APPLY_LOG).exists()
    assert len(CleanerState(root).decisions) == 500                   # the decisions are back too


@pytest.mark.timeout(600)
def test_kill_during_apply_then_apply_resumes(tmp_path):
    root = make_dataset(tmp_path/'bears')
    before, _ = hashes(root)
    decide(root)
    run_killed(root, 'apply', 150)
    with pytest.warns(UserWarning, match='resuming') as said: moves = apply_cleaning(root)
    assert not [w for w in said if 'ignored' in str(w.message)]   # the moved files' decisions are the log's to finish, not "ignored"
    assert len(moves) == 500 and moves.dst.nunique() == 500
    after, trash = hashes(root)
    assert len(after) == 250 and len(trash) == 250 and sorted(after.values()) == sorted(before[n] for n in before if int(n[-6:-4]) % 2 == 0)
    assert CleanerState(root).decisions == {} and json.loads((root/APPLY_LOG).read_text())['status'] == 'applied'
    undo_cleaning(root)
    assert hashes(root)[0] == before


@pytest.mark.timeout(600)
def test_undo_killed_half_way_can_be_rerun(tmp_path):
    root = make_dataset(tmp_path/'bears')
    before, _ = hashes(root)
    decide(root); apply_cleaning(root)
    run_killed(root, 'undo', 220)
    assert json.loads((root/APPLY_LOG).read_text())['status'] == 'undoing'
    with pytest.raises(RuntimeError, match='run undo_cleaning'): apply_cleaning(root)   # no apply on top of a half undo
    assert undo_cleaning(root) == 500
    assert hashes(root)[0] == before
