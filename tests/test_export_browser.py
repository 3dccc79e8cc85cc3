"Real browser: run imgclean/assets/collect_urls.js (and its bookmarklet) on mock Bing, Google and DuckDuckGo result pages."
import os
from pathlib import Path
from urllib.parse import unquote

import pytest

from imgclean.export import url_collector_js

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
CI = os.environ.get('CI', '').lower() == 'true'

BING = '''<html><body><div id="mmComponent_images_1">
<a class="iusc" m='{"murl":"https://a.example/bear1.jpg","turl":"https://tse1.mm.bing.net/th?id=OIP.1"}'><img class="mimg" src="https://tse1.mm.bing.net/th?id=OIP.1"></a>
<a class="iusc" m='{"murl":"https://a.example/bear2.png","turl":"https://tse2.mm.bing.net/th?id=OIP.2"}'><img class="mimg" src="data:image/gif;base64,R0lGODlhAQABAAAAACw="></a>
<a class="iusc" m='{"murl":"https://a.example/bear1.jpg"}'></a>
<a href="/images/search?view=detailV2&amp;mediaurl=https%3A%2F%2Fb.example%2Fbear3.jpg">detail</a>
<a href="https://a.example/about.html">about</a></div></body></html>'''

GOOGLE = r'''<html><body><div id="islrg"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<a href="/imgres?imgurl=https%3A%2F%2Fd.example%2Fg3.webp&amp;imgrefurl=https%3A%2F%2Fd.example%2Fpage">r</a></div>
<script>AF_initDataCallback({key:'ds:1',data:[[["https://encrypted-tbn0.gstatic.com/images?q\u003dtbn:abc",194,259],
["https://c.example/g1.png",800,600]],[["https://c.example/g2.jpg?w\u003d1",1024,768]]]});</script></body></html>'''

DDG = '''<html><body><div class="tile--img"><img class="tile--img__img" src="//external-content.duckduckgo.com/iu/?u=https%3A%2F%2Ftse2.mm.bing.net%2Fth%3Fid%3DOIP.abc&amp;f=1&amp;nofb=1"></div>
<div class="detail"><a class="c-detail__btn" href="https://e.example/full/d1.jpeg">View file</a>
<a href="https://external-content.duckduckgo.com/iu/?u=https%3A%2F%2Fe.example%2Ffull%2Fd2.png&amp;f=1">proxied</a>
<a href="https://e.example/page.html">Visit site</a></div></body></html>'''

THUMBS = '''<html><body><img src="https://tse1.mm.bing.net/th?id=OIP.9"><img src="https://tse1.mm.bing.net/th?id=OIP.9"></body></html>'''

CASES = [  # (page URL, html, expected file name, expected URLs)
    ('https://www.bing.com/images/search?q=grizzly+bear&form=HDRSC2', BING, 'urls_grizzly_bear.csv',
     {'https://a.example/bear1.jpg', 'https://a.example/bear2.png', 'https://b.example/bear3.jpg'}),
    ('https://www.google.com/search?q=Golden+Retriever&udm=2', GOOGLE, 'urls_golden_retriever.csv',
     {'https://c.example/g1.png', 'https://c.example/g2.jpg?w=1', 'https://d.example/g3.webp'}),
    ('https://duckduckgo.com/?q=black+bear&iax=images&ia=images', DDG, 'urls_black_bear.csv',
     {'https://e.example/full/d1.jpeg', 'https://e.example/full/d2.png'}),
    ('https://www.bing.com/images/search?q=teddy', THUMBS, 'urls_teddy.csv', {'https://tse1.mm.bing.net/th?id=OIP.9'}),
]


def _need(cond, why):
    if cond: return
    if CI: pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('bookmarklet', [False, True])
def test_collect_urls_on_search_pages(bookmarklet, tmp_path):
    try: from playwright.sync_api import sync_playwright
    except ImportError as e: _need(False, f"playwright is not installed ({e})")
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    js = url_collector_js(bookmarklet)
    code = unquote(js[len('javascript:'):]) if bookmarklet else js
    pages = {u: html for u, html, _, _ in CASES}
    with sync_playwright() as pw:
        try: browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        except Exception as e: _need(False, f"chromium does not start: {e}")
        try:
            ctx = browser.new_context(accept_downloads=True)
            # every request is answered here: mock result pages, 404 for everything else (no network)
            ctx.route('**/*', lambda route: route.fulfill(status=200, content_type='text/html', body=pages[route.request.url])
                      if route.request.url in pages else route.fulfill(status=404, body=''))
            page = ctx.new_page()
            logs = []
            page.on('console', lambda m: logs.append(m.text))
            for url, _, fname, want in CASES:
                page.goto(url, wait_until='domcontentloaded')
                with page.expect_download(timeout=15_000) as dl:
                    page.evaluate(code) if not bookmarklet else page.evaluate(f"() => {{ {code} }}")
                d = dl.value
                assert d.suggested_filename == fname
                out = tmp_path/f"{bookmarklet}_{fname}"; d.save_as(out)
                lines = out.read_text().splitlines()
                assert set(lines) == want and len(lines) == len(want), (url, lines)
                assert not any(l.startswith('data:') for l in lines)
            assert any('thumbnail' in m for m in logs)   # the thumbs-only page says what it saved
        finally: browser.close()
