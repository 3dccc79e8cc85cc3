"Real browser: `imgclean serve` under uvicorn on 127.0.0.1, Debian's chromium uploads an image on / and sees the prediction."
import json, os, urllib.request
from pathlib import Path

import pytest

from _serve_helpers import CliServer, png_bytes, tiny_export

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
CI = os.environ.get('CI', '').lower() == 'true'


def _need(cond, why):
    if cond: return
    if CI: pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


@pytest.mark.timeout(180)
def test_upload_page_in_chromium(tmp_path, free_port, artifacts):
    try: from playwright.sync_api import sync_playwright
    except ImportError as e: _need(False, f"playwright is not installed ({e})")
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    pkl, _ = tiny_export()
    img = tmp_path/'square.png'; img.write_bytes(png_bytes('square', size=64, seed=3))
    base = f'http://127.0.0.1:{free_port}'
    with CliServer(pkl, free_port):
        req = urllib.request.Request(f'{base}/classify', data=img.read_bytes(), method='POST')
        with urllib.request.urlopen(req, timeout=30) as r: expected = json.loads(r.read())['predictions'][0][0]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
            try:
                page = browser.new_page()
                page.goto(base + '/', wait_until='domcontentloaded', timeout=30_000)
                page.set_input_files('#file', str(img))
                page.wait_for_selector('#results .pred', timeout=30_000)
                labels = page.locator('#results .pred .label').all_inner_texts()
                widths = page.locator('#results .pred .bar').evaluate_all('els => els.map(e => parseFloat(e.style.width))')
                page.screenshot(path=str(artifacts/'serve_page.png'), full_page=True)
                assert page.locator('#error').inner_text() == ''
                page.fill('#url', f'{base}/health')       # the page's URL box: loopback is refused, and says why
                page.click('#url-button')
                page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
                url_error = page.locator('#error').inner_text()
            finally: browser.close()
        assert labels[0] == expected and len(labels) == 3
        assert widths == sorted(widths, reverse=True) and abs(sum(widths) - 100) < 1
        assert 'is not a public address' in url_error
        assert (artifacts/'serve_page.png').stat().st_size > 0
