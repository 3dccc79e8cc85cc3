"Real browser: JupyterLab + Debian chromium (playwright) click Delete and relabel in ImageCleaner; cleaned.csv follows."
import json, os, re, shutil, time
from pathlib import Path

import pandas as pd
import pytest

from _widgets_helpers import JupyterLab, write_notebook
from conftest import make_class_folders

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
CI = os.environ.get('CI', '').lower() == 'true'
NB_DIR = Path(__file__).parent/'artifacts'  # a copy of the generated notebook, to open by hand


def _need(cond, why):
    if cond: return
    if CI: pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


def _wait_for(fn, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v: return v
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _cells(page):
    "Each notebook cell's prompt and output text as the browser shows them (what the kernel did, for failure messages)"
    return page.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => ({
        prompt: (c.querySelector('.jp-InputPrompt') || {}).innerText || '',
        output: ((c.querySelector('.jp-OutputArea') || {}).innerText || '').slice(-2000)}))""")


def _run_all(page, tries=3, started=20):
    "Run > Run All Cells; again if no cell shows `[*]` or a count within `started` s (a click lost while Lab settles)"
    for _ in range(tries):
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.locator('.lm-Menu-itemLabel', has_text='Run All Cells').first.click()
        deadline = time.time() + started
        while time.time() < deadline:
            if any(re.search(r'\[(\*|\d+)\]', c['prompt']) for c in _cells(page)): return
            time.sleep(0.3)
        page.keyboard.press('Escape')  # close the menu if it is still open
    raise AssertionError(f"no cell started after {tries} tries of Run All Cells: {_cells(page)}")


def _wait_for_tiles(page, timeout):
    "Wait until the cleaner shows its tiles; fail at once, with the cell outputs, if a cell shows an error"
    tiles, deadline = page.locator('.imgclean-tile'), time.time() + timeout
    while time.time() < deadline:
        if tiles.count(): return tiles
        cells = _cells(page)
        if any(re.search(r'Traceback|Error displaying widget', c['output']) for c in cells): raise AssertionError(f"a cell failed: {cells}")
        time.sleep(0.5)
    raise AssertionError(f"no ImageCleaner tile after {timeout}s; cells: {_cells(page)}")


def _cleaned(root):
    fn = root/'cleaned.csv'
    return pd.read_csv(fn) if fn.exists() else None


def _start(page, lab, nb):
    "Open `nb` in JupyterLab, Run All Cells, wait for the cleaners' tiles"
    page.goto(f'{lab.url}/lab/tree/{nb}?token={lab.token}', wait_until='domcontentloaded')
    page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=60_000)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state='attached', timeout=60_000)
    page.click('.jp-Notebook .jp-Cell >> nth=0')
    page.keyboard.press('Escape')
    _run_all(page)
    return _wait_for_tiles(page, 150)  # the kernel imports pandas and ipywidgets first: slow on a busy machine


def _state(root):
    fn = root/'.imgclean_cleaner.json'
    return json.loads(fn.read_text())['decisions'] if fn.exists() else {}


class Clicks:
    "Counts the clicks a user makes (what the issue measures: clicks per relabel, per duplicate group)"
    def __init__(self): self.n = 0
    def __call__(self, locator): self.n += 1; locator.click()


@pytest.mark.timeout(420)
def test_two_cleaners_keys_and_apply_in_jupyterlab(tmp_path, artifacts):
    "Three cleaners on one dataset in one notebook: a click in each lands in one state; keys; enlarge; apply elsewhere, then click"
    try: from playwright.sync_api import sync_playwright, expect
    except ImportError as e: _need(False, f"playwright is not installed ({e})")
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    import ipywidgets, anywidget  # noqa: F401  (requirements: an ImportError here is a real failure)
    from imgclean.core import write_issues
    from imgclean.widgets import apply_cleaning
    work = tmp_path/'lab'; work.mkdir()
    root = make_class_folders(work/'shapes', classes=('circle', 'square'), n=3)
    write_issues(pd.DataFrame(dict(file=['square/000.png', 'circle/002.png', 'circle/001.png', 'square/001.png'], label=['square', 'circle', 'circle', 'square'],
                                   issue=['label', 'label', 'near_duplicate', 'near_duplicate'], score=[.9, .5, .97, .97],
                                   suggestion=['circle', 'square', 'circle/001.png', 'circle/001.png'], group=[-1, -1, 0, 0],
                                   similarity=[float('nan')]*2 + [.97, .97], note=['p(circle)=0.90', '', '', ''])), root/'issues.csv')
    cells = ["import sys; sys.path.insert(0, %r)\nfrom imgclean.widgets import ImageCleaner" % str(Path(__file__).parents[1]),
             "a = ImageCleaner('shapes', mode='all', batch_size=4, size=64)\na",
             "b = ImageCleaner('shapes', issues='shapes/issues.csv', mode='losses', size=64)\nb",
             "d = ImageCleaner('shapes', issues='shapes/issues.csv', mode='duplicates', size=64)\nd"]
    nb = write_notebook(work/'cleaners_test.ipynb', cells)
    NB_DIR.mkdir(exist_ok=True); shutil.copy(nb, NB_DIR/'cleaners_test.ipynb')
    with JupyterLab(work, tmp_path, timeout=60) as lab, sync_playwright() as pw:
        try: browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        except Exception as e: _need(False, f"chromium does not start: {e}")
        try:
            page = browser.new_page(viewport=dict(width=1400, height=1000))
            page.set_default_timeout(30_000)
            _start(page, lab, 'cleaners_test.ipynb')
            cl = page.locator('.imgclean-cleaner')
            expect(cl).to_have_count(3, timeout=120_000)
            A, B, D = cl.nth(0), cl.nth(1), cl.nth(2)
            expect(D.locator('.imgclean-tile')).to_have_count(2, timeout=60_000)
            tile = lambda c, name: c.locator('.imgclean-tile').filter(has=page.locator(f'.imgclean-name[title="{name}"]'))
            click = Clicks()
            # a click in the first cleaner
            click(tile(A, 'circle/000.png').get_by_role('button', name='Delete'))
            _wait_for(lambda: _state(root).get('circle/000.png') == {'action': 'delete'}, 30, 'the deletion in the state file')
            # one click accepts the model's suggestion in the second; the first shows it live
            n0 = click.n
            click(tile(B, 'square/000.png').get_by_role('button', name='Accept: circle'))
            _wait_for(lambda: _state(root).get('square/000.png') == {'action': 'relabel', 'label': 'circle'}, 30, 'the relabel in the state file')
            relabel_clicks = click.n - n0
            expect(tile(A, 'square/000.png').locator('.imgclean-new')).to_have_text('circle', timeout=30_000)
            # one click per duplicate group in the third
            n0 = click.n
            click(tile(D, 'square/001.png').get_by_role('button', name='Keep only this'))
            _wait_for(lambda: _state(root).get('circle/001.png') == {'action': 'delete'} and _state(root).get('square/001.png') == {'action': 'keep'}, 30, 'the group decision')
            group_clicks = click.n - n0
            expect(tile(A, 'circle/001.png')).to_have_class(re.compile('imgclean-deleted'), timeout=30_000)
            # keys: focus the second cleaner, next image, delete it
            B.locator('small', has_text='keys').click()
            page.keyboard.press('ArrowRight'); page.keyboard.press('d')
            _wait_for(lambda: _state(root).get('circle/002.png') == {'action': 'delete'}, 30, "the key 'd' in the state file")
            # Enter (accept) and k (keep) on the tile just deleted leave it deleted, say so, and its Keep button is disabled
            page.keyboard.press('Enter'); page.keyboard.press('k')
            expect(B.locator('text=Keep leaves it deleted')).to_be_visible(timeout=30_000)
            assert _state(root).get('circle/002.png') == {'action': 'delete'}
            for button in (re.compile(r'^\W*Keep$'), 'Accept: square'):   # the Keep button's name starts with its icon
                expect(tile(B, 'circle/002.png').get_by_role('button', name=button)).to_be_disabled(timeout=30_000)
            # a click on a thumbnail enlarges it
            tile(A, 'square/000.png').locator('img').click()
            expect(A.get_by_role('button', name='Close')).to_be_visible(timeout=30_000)
            page.screenshot(path=str(artifacts/'widgets_jupyterlab.png'), full_page=True)
            # another process applies the decisions; a click in the (now stale) first cleaner is refused, then works
            moves = apply_cleaning(root)
            assert len(moves) == 4
            click(tile(A, 'square/000.png').get_by_role('button', name='Delete'))   # the page still shows the old names
            expect(A.locator('text=Not saved')).to_be_visible(timeout=30_000)
            assert _state(root) == {}
            expect(tile(A, 'circle/000_1.png')).to_have_count(1, timeout=30_000)   # the view follows the new names
            click(tile(A, 'square/002.png').get_by_role('button', name='Delete'))    # clicked again: saved
            _wait_for(lambda: _state(root) == {'square/002.png': {'action': 'delete'}}, 30, 'the click after apply')
            page.screenshot(path=str(artifacts/'widgets_jupyterlab_after_apply.png'), full_page=True)
        except Exception:
            try: page.screenshot(path=str(artifacts/'widgets_jupyterlab_failure.png'), full_page=True)
            except Exception: pass
            print(lab.logtext()); raise
        finally: browser.close()
    print(f"clicks per relabel with a correct suggestion: {relabel_clicks}; per duplicate group: {group_clicks}")
    assert relabel_clicks == 1 and group_clicks == 1
    df = pd.read_csv(root/'cleaned.csv')
    assert all((root/n).exists() for n in df.name)                       # never a file that does not exist
    assert 'square/002.png' not in set(df.name) and df.set_index('name').label['circle/000_1.png'] == 'circle'
    assert len(df) == 6 - 3 - 1                                           # 6 images, 3 deleted by apply, 1 deleted after


@pytest.mark.timeout(300)
def test_cleaner_in_jupyterlab(tmp_path, artifacts):
    try: from playwright.sync_api import sync_playwright, expect
    except ImportError as e: _need(False, f"playwright is not installed ({e})")
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    import ipywidgets  # noqa: F401  (a requirement: an ImportError here is a real failure)
    work = tmp_path/'lab'; work.mkdir()
    root = make_class_folders(work/'shapes', classes=('circle', 'square'), n=3)
    # the test notebook, generated here (a copy is kept in tests/artifacts/ to open by hand)
    cells = ["import sys; sys.path.insert(0, %r)\nfrom imgclean.widgets import ImageCleaner" % str(Path(__file__).parents[1]),
             "cleaner = ImageCleaner('shapes', mode='all', batch_size=4, size=64)\ncleaner"]
    nb = write_notebook(work/'cleaner_test.ipynb', cells)
    NB_DIR.mkdir(exist_ok=True); shutil.copy(nb, NB_DIR/'cleaner_test.ipynb')
    with JupyterLab(work, tmp_path, timeout=60) as lab, sync_playwright() as pw:
        try: browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        except Exception as e: _need(False, f"chromium does not start: {e}")
        try:
            page = browser.new_page(viewport=dict(width=1400, height=1000))
            page.set_default_timeout(30_000)
            tiles = _start(page, lab, 'cleaner_test.ipynb')
            assert tiles.count() == 4
            names = [tiles.nth(i).inner_text().split('\n')[0].strip() for i in range(2)]
            assert names == ['circle/000.png', 'circle/001.png'], names
            tiles.nth(0).get_by_role('button', name='Delete').click()
            _wait_for(lambda: (d := _cleaned(root)) is not None and 'circle/000.png' not in set(d.name), 30, 'the deletion in cleaned.csv')
            tiles.nth(1).locator('select').select_option(label='2 square')   # the menu numbers classes for the digit keys
            _wait_for(lambda: (d := _cleaned(root)) is not None and d.set_index('name').label.get('circle/001.png') == 'square', 30, 'the relabel in cleaned.csv')
            page.screenshot(path=str(artifacts/'widgets_jupyterlab.png'), full_page=True)
            page.get_by_role('button', name='Next').click()  # paging reaches the kernel and comes back
            page.locator('.imgclean-cleaner', has_text='5–6').wait_for(timeout=30_000)
            expect(page.locator('.imgclean-tile')).to_have_count(2, timeout=30_000)
            # with the cleaner focused, Lab's one-key shortcuts stay off ('b' would insert a cell) but Ctrl+S saves
            # (every Lab shortcut used to be off there: the notebook was not saved)
            cells_before = page.locator('.jp-Cell').count()
            page.locator('.imgclean-cleaner small', has_text='keys').click()
            page.keyboard.press('b'); time.sleep(1)
            assert page.locator('.jp-Cell').count() == cells_before
            saved = os.stat(nb).st_mtime_ns
            page.keyboard.press('Control+s')
            _wait_for(lambda: os.stat(nb).st_mtime_ns != saved, 30, 'the notebook saved by Ctrl+S')
        except Exception:
            try: page.screenshot(path=str(artifacts/'widgets_jupyterlab_failure.png'), full_page=True)
            except Exception: pass
            print(lab.logtext()); raise
        finally: browser.close()
    # exactly those two decisions, every other item kept with its folder label
    df = pd.read_csv(root/'cleaned.csv')
    expected = pd.DataFrame(dict(name=[f'{c}/{i:03d}.png' for c in ('circle', 'square') for i in range(3)],
                                 label=['circle']*3 + ['square']*3))
    expected = expected[expected.name != 'circle/000.png'].reset_index(drop=True)
    expected.loc[expected.name == 'circle/001.png', 'label'] = 'square'
    pd.testing.assert_frame_equal(df, expected)
