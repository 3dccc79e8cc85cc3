"""No decision is lost, whatever the interleaving of clicks in 3 cleaners in each of 2 processes (issue 16).

Two worker processes (tests/_cleaner_worker.py) each hold three ImageCleaners on the same dataset. A hypothesis
strategy draws sequences of clicks (process, cleaner, what); the test sends them one at a time and keeps a model of
the decisions they should leave. After every click, every cleaner of the clicking process must show the state
(live update); at the end the state file, cleaned.csv and both processes' cleaners must equal the model. A second
test lets both processes click at full speed at the same time and replays the model in the order the clicks
reached the file (each click's `seq`).
"""
import json, random, shutil, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as S

from conftest import make_class_folders
from imgclean.widgets import STATE_FILE

WORKER = Path(__file__).with_name('_cleaner_worker.py')
CLASSES = ('circle', 'square', 'triangle')
NAMES = [f'{c}/{i:03d}.png' for c in CLASSES for i in range(4)]
GROUPS = {0: ['circle/001.png', 'circle/002.png', 'square/003.png'], 1: ['square/002.png', 'triangle/003.png']}
DUPS = [n for g in GROUPS.values() for n in g]
ISSUES = dict(file=DUPS, label=[n.split('/')[0] for n in DUPS], issue=['near_duplicate']*len(DUPS), score=[.9]*len(DUPS),
              suggestion=[GROUPS[g][0] for g in GROUPS for _ in GROUPS[g]], group=[g for g in GROUPS for _ in GROUPS[g]],
              similarity=[.95]*len(DUPS), note=['']*len(DUPS))


class Worker:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    def ask(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + '\n'); self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line: raise RuntimeError(f"worker died on {cmd}")
        return json.loads(line)
    def close(self):
        try: self.p.stdin.write(json.dumps(dict(cmd='quit')) + '\n'); self.p.stdin.flush(); self.p.wait(20)
        except (OSError, subprocess.TimeoutExpired): self.p.kill(); self.p.wait(10)


@pytest.fixture(scope='module')
def workers():
    ws = [Worker(), Worker()]
    yield ws
    for w in ws: w.close()


@pytest.fixture(scope='module')
def template(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp('tpl')/'shapes', classes=CLASSES, n=4)


def apply_model(model, op, clicked=True):
    "What one click does to the expected decisions"
    kind, name = op[0], op[1] if len(op) > 1 else None
    if kind in ('page', 'filter') or not clicked: return
    if kind == 'delete': model[name] = dict(action='delete')
    elif kind == 'undelete':
        if model.get(name, {}).get('action') == 'delete': del model[name]
    elif kind == 'keep': model[name] = dict(action='keep')
    elif kind == 'relabel': model[name] = dict(action='keep') if op[2] == name.split('/')[0] else dict(action='relabel', label=op[2])
    elif kind == 'keep_only':
        g = next(g for g in GROUPS.values() if name in g)
        for n in g: model[n] = dict(action='keep') if n == name else dict(action='delete')


def expected_csv(model):
    keep = [n for n in NAMES if model.get(n, {}).get('action') != 'delete']
    return pd.DataFrame(dict(name=keep, label=[model.get(n, {}).get('label', n.split('/')[0]) for n in keep]))


@S.composite
def clicks(draw):
    "One click: (process, cleaner, op)"
    proc, kind = draw(S.integers(0, 1)), draw(S.sampled_from(['delete', 'undelete', 'relabel', 'keep', 'keep_only', 'page', 'filter']))
    if kind == 'keep_only': return proc, 1, ('keep_only', draw(S.sampled_from(DUPS)))
    cleaner = draw(S.integers(0, 2))
    if kind == 'page': return proc, cleaner, ('page', '')
    if kind == 'filter': return proc, 2, ('filter', draw(S.sampled_from(('(all)',) + CLASSES)))
    name = draw(S.sampled_from(DUPS if cleaner == 1 else NAMES))
    return proc, cleaner, (kind, name) + ((draw(S.sampled_from(CLASSES)),) if kind == 'relabel' else ())


def fresh(template, tmp_path, workers, n=[0]):
    n[0] += 1
    root = tmp_path/f'run{n[0]}'/'shapes'
    shutil.copytree(template, root)
    for w in workers: assert w.ask(cmd='open', path=str(root), issues=ISSUES)['ok']
    return root


def check_final(root, workers, model):
    d = json.loads((root/STATE_FILE).read_text())['decisions'] if (root/STATE_FILE).exists() else {}
    assert d == model
    if (root/'cleaned.csv').exists() or model:
        pd.testing.assert_frame_equal(pd.read_csv(root/'cleaned.csv', dtype=str, keep_default_na=False), expected_csv(model))
    for w in workers:
        r = w.ask(cmd='report')
        assert r['decisions'] == model and r['stale'] == []


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(S.lists(clicks(), min_size=1, max_size=30))
def test_interleaved_clicks_lose_nothing(workers, template, tmp_path_factory, seq):
    root = fresh(template, tmp_path_factory.mktemp('h'), workers)
    model = {}
    for proc, cleaner, op in seq:
        r = workers[proc].ask(cmd='click', cleaner=cleaner, op=list(op))
        apply_model(model, op, r['clicked'])
        assert r['stale'] == [], f"a cleaner of process {proc} did not update after {op}: {r['stale']}"
        assert 'Not saved' not in r['message']
    check_final(root, workers, model)


def test_clicks_at_the_same_time_lose_nothing(template, tmp_path):
    "Both processes click as fast as they can at once; the file orders the clicks (seq), the model replays that order"
    root = tmp_path/'shapes'; shutil.copytree(template, root)
    procs = []
    for k in range(2):
        rng = random.Random(k)
        script = [dict(cmd='open', path=str(root), issues=ISSUES)]
        for _ in range(120):
            kind = rng.choice(['delete', 'undelete', 'relabel', 'keep', 'keep_only', 'page'])
            if kind == 'keep_only': script.append(dict(cmd='click', cleaner=1, op=['keep_only', rng.choice(DUPS)])); continue
            c = rng.randrange(3)
            if kind == 'page': script.append(dict(cmd='click', cleaner=c, op=['page', ''])); continue
            op = [kind, rng.choice(DUPS if c == 1 else NAMES)] + ([rng.choice(CLASSES)] if kind == 'relabel' else [])
            script.append(dict(cmd='click', cleaner=c, op=op))
        script.append(dict(cmd='report')); script.append(dict(cmd='quit'))
        p = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append((p, script))
    outs = [p.communicate('\n'.join(json.dumps(c) for c in s) + '\n', timeout=600)[0].splitlines() for p, s in procs]
    done = []   # (seq, op, clicked)
    for (p, script), out in zip(procs, outs):
        answers = [json.loads(o) for o in out]
        assert len(answers) == len(script) - 1, out[-3:]
        for cmd, a in zip(script[1:-2], answers[1:-1]):
            assert 'Not saved' not in a['message']
            if a['seq'] is not None: done.append((a['seq'], cmd['op'], a['clicked']))
    seqs = sorted(s for s, _, _ in done)
    assert len(seqs) == len(set(seqs)), "two clicks got the same place in the file's order"
    model = {}
    for _, op, clicked in sorted(done, key=lambda o: o[0]): apply_model(model, tuple(op), clicked)
    assert json.loads((root/STATE_FILE).read_text())['decisions'] == model
    pd.testing.assert_frame_equal(pd.read_csv(root/'cleaned.csv', dtype=str, keep_default_na=False), expected_csv(model))
