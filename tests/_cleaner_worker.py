"""A process holding three ImageCleaners on one dataset, driven over stdin/stdout (one JSON command per line).

Used by tests/test_widgets_concurrency.py: each command is a click in one of the cleaners; the answer says what the
process's cleaners show afterwards, so a test can check that every cleaner of the process updated live.
"""
import json, sys, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter('ignore')

import pandas as pd
from imgclean.widgets import ImageCleaner, CleanerState


def open_cleaners(path, issues):
    "Three cleaners as a user would have them: all images, duplicate groups, and a filtered, paged view"
    issues = pd.DataFrame(issues)
    return [ImageCleaner(path, mode='all', batch_size=4), ImageCleaner(path, issues=issues, mode='duplicates', batch_size=2),
            ImageCleaner(path, mode='all', batch_size=3)]


def click(c, op):
    "Do `op` in cleaner `c` the way a user would: bring the image onto the page, then press the widget"
    kind, name = op[0], op[1]
    if kind == 'page': return c.next.click() if not c.next.disabled else c.prev.click()
    if kind == 'filter': c.f_label.value = name; return
    if name not in c.tiles: c.goto(name)   # on the page already: clicked as shown, however stale
    t = c.tiles[name]
    if kind == 'delete':                   # a Delete that shows as on already: no event
        if t.dl.value: return False
        t.dl.value = True
    elif kind == 'undelete':               # a user can only un-toggle a Delete that shows as on
        if not t.dl.value: return False
        t.dl.value = False
    elif kind == 'relabel':               # choosing the label a menu shows already is no event
        if t.dd.value == op[2]: return False
        t.dd.value = op[2]
    elif kind == 'keep':                   # a deleted tile's Keep is disabled: no event
        if t.kp.disabled: return False
        t.kp.click()
        if 'Keep leaves it deleted' in c.message.value: return False   # deleted by the other process: the state file says so, under the lock
    elif kind == 'keep_only': t.ok.click()
    else: raise ValueError(f"unknown op {op}")


def shown(cs):
    "Tiles whose widgets disagree with the process's state (should be none: every cleaner updates live)"
    bad = []
    for i, c in enumerate(cs):
        for n, t in c.tiles.items():
            if t.dl.value != c.state.is_deleted(n) or t.dd.value != c.state.label(n): bad.append((i, n))
    return bad


def main():
    cs = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd['cmd'] == 'open': cs = open_cleaners(cmd['path'], cmd['issues']); out = dict(ok=True)
        elif cmd['cmd'] == 'click':
            seq0 = cs[0].state.seq
            clicked = click(cs[cmd['cleaner']], cmd['op']) is not False
            wrote = clicked and cmd['op'][0] not in ('page', 'filter')   # only then is the last seq adopted our own
            out = dict(clicked=clicked, seq=cs[0].state.seq if wrote else None, stale=shown(cs), message=cs[cmd['cleaner']].message.value)
        elif cmd['cmd'] == 'report':
            cs[0].state.refresh()
            out = dict(decisions=cs[0].state.decisions, stale=shown(cs))
        else: break
        print(json.dumps(out), flush=True)


if __name__ == '__main__': main()
