"Downloader: every fault kind ends as a reported manifest row, never a crash or a hang; one deadline per fetch; fastai's call forms; resume; input parsing."
import contextlib, io, os, shutil, signal, socket, subprocess, sys, tempfile, textwrap, time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _fault_helpers import FaultServer, jpeg_bytes, png_bytes  # noqa: E402
from fastcore.foundation import L

from imgclean.core import file_hash
from imgclean.download import download_images, fetch_image, FetchError, read_urls, summarize_downloads
from imgclean.images import sniff_image
from imgclean.verify import verify_dataset

FAST = dict(timeout=1, total_timeout=4, max_bytes=2_000_000, retries=1, backoff=0.05, progress=False)


@pytest.fixture(scope='module')
def server():
    files = {f'{i}.jpg': jpeg_bytes((40 + i, 30), (i*20 % 255, 50, 90)) for i in range(6)}
    with FaultServer(files, stall=3) as s: yield s


@pytest.fixture(scope='module')
def faults(server, tmp_path_factory):
    "One download of every fault kind plus good images, then a verify pass"
    s = server
    urls = {'good': [s.img_url(f'{i}.jpg') for i in range(4)] + [s.img_url('0.jpg'), s.url('ok_query') + '?x=1', s.url('wrongtype')],
            'bad': [s.url(k) for k in ('404', 'flaky', 'html', 'truncated', 'empty', 'loop', 'reset', 'big', 'bigstream',
                                       'stall', 'bomb', 'dupA', 'dupB', 'gone500')]
                   + ['file:///etc/passwd', 'data:image/png;base64,AAAA', 'javascript:alert(1)', 'not a url', 'http://', s.img_url('1.jpg')]}
    dest = tmp_path_factory.mktemp('faults')/'images'
    t0 = time.monotonic()
    df = download_images(urls, dest, **FAST)
    took = time.monotonic() - t0
    return dest, df.set_index('url'), took, urls


def test_every_url_has_a_row_and_nothing_hangs(faults):
    dest, df, took, urls = faults
    assert len(df) == sum(len(v) for v in urls.values())
    assert took < 20                      # stall (3 s server sleep) bounded by the 1 s timeout
    assert set(df.status) <= {'ok', 'skipped', 'failed'} and (df.reason[df.status != 'ok'] != '').all()
    man = pd.read_csv(dest/'manifest.csv', keep_default_na=False)
    assert list(man.columns[:9]) == ['class', 'url', 'status', 'reason', 'file', 'bytes', 'width', 'height', 'hash']
    assert len(man) == len(df)


@pytest.mark.parametrize('kind,status,reason', [
    ('404', 'failed', 'http 404'), ('html', 'failed', 'not an image (text/html)'), ('empty', 'failed', 'empty body'),
    ('loop', 'failed', 'too many redirects'), ('reset', 'failed', 'connection reset'), ('big', 'failed', 'too large'),
    ('bigstream', 'failed', 'too large'), ('stall', 'failed', 'timeout'), ('gone500', 'failed', 'http 503 after 2 tries'),
    ('flaky', 'ok', ''), ('truncated', 'failed', 'verify: truncated image'), ('bomb', 'failed', 'verify: too many pixels (30000x30000 = 900,000,000, over max_pixels 89,478,485'),
    ('dupA', 'ok', ''),
    ('dupB', 'skipped', 'duplicate image'),
])
def test_fault_rows(faults, server, kind, status, reason):
    _, df, _, _ = faults
    r = df.loc[server.url(kind)]
    assert r.status == status and r.reason.startswith(reason), (r.status, r.reason)


def test_schemes_malformed_and_duplicates(faults, server):
    _, df, _, _ = faults
    for u in ('file:///etc/passwd', 'javascript:alert(1)'):
        assert df.loc[u].status == 'failed' and df.loc[u].reason.startswith('unsupported scheme')
    assert df.loc['data:image/png;base64,AAAA'].reason.startswith('verify: ')   # read like fastai's urllib does, then checked: 3 zero bytes
    assert df.loc['not%20a%20url'].reason.startswith('malformed') and df.loc['http://'].reason.startswith('malformed')
    rows = df.loc[[server.img_url('0.jpg')]]     # listed twice in 'good'
    assert sorted(rows.status) == ['ok', 'skipped'] and 'duplicate url' in set(rows.reason)
    cross = df.loc[[server.img_url('1.jpg')]]    # listed in 'bad' and 'good'
    assert 'duplicate url (also listed in class bad)' in set(cross.reason)   # kept in the first class alphabetically


def test_data_urls_are_images_too(tmp_path):
    "A browser's export of an image search holds thumbnails as data: URLs; fastai (urllib) saves them, so both forms keep them"
    import base64
    jpg = jpeg_bytes((40, 30), (200, 30, 30))
    good = 'data:image/jpeg;base64,' + base64.b64encode(jpg).decode()
    png = 'data:image/png;base64,' + base64.b64encode(png_bytes((20, 24))).decode()
    df = download_images({'red': [good, png, 'data:text/plain,hello', 'data:image/png;base64', 'data:image/gif;base64,' + 'A'*4000]},
                         tmp_path/'ours', progress=False, verbose=False, max_bytes=2000).set_index('url')
    assert df.loc[good].status == 'ok' and (tmp_path/'ours'/df.loc[good].file).read_bytes() == jpg and df.loc[good].width == 40
    assert df.loc[png].status == 'ok' and df.loc[png].file.endswith('.png')
    assert df.loc['data:text/plain,hello'].reason == 'not an image (text/plain)'
    assert df.loc['data:image/png;base64'].reason.startswith('malformed data: url')
    assert df.loc['data:image/gif;base64,' + 'A'*4000].reason.startswith('too large')   # over max_bytes, never decoded
    download_images(tmp_path/'fastai'/'red', urls=[good], preserve_filename=True)   # fastai's form; no name from the base64
    assert [f.read_bytes() for f in (tmp_path/'fastai'/'red').glob('*.jpg')] == [jpg]


def test_data_url_rows_of_a_csv_export(tmp_path):
    "A CSV row with an inlined thumbnail then its page URL keeps the thumbnail; base64 with nothing decodable says so"
    import base64
    jpg = jpeg_bytes((40, 30), (30, 200, 30))
    good = 'data:image/jpeg;base64,' + base64.b64encode(jpg).decode()
    (tmp_path/'urls').mkdir()
    (tmp_path/'urls'/'urls_green.csv').write_text(f'url,page\n"{good}",https://page.test/green\n')   # a CSV export with named columns
    (tmp_path/'urls'/'urls_blue.csv').write_text('data:image/png;base64,!!!!,https://page.test/x\n')   # no header, no quotes
    df = download_images(tmp_path/'urls', tmp_path/'out', progress=False, verbose=False).set_index('url')
    assert sorted(df.index) == sorted([good, 'data:image/png;base64,!!!!'])   # no page URL taken instead
    assert df.loc[good].status == 'ok' and (tmp_path/'out'/df.loc[good].file).read_bytes() == jpg
    assert df.loc['data:image/png;base64,!!!!'].reason == 'malformed data: url (no base64 data in it)'


def test_files_query_string_and_sniffed_extension(faults, server):
    dest, df, _, _ = faults
    ok = df[df.status == 'ok']
    assert sorted(str(p.relative_to(dest)) for p in dest.glob('[!.]*/*')) == sorted(ok.file)   # no partial or extra files
    assert not list(dest.rglob('.*.part'))
    assert ok.loc[server.url('ok_query') + '?x=1'].file.endswith('.png')   # query kept; extension from bytes
    assert ok.loc[server.url('wrongtype')].file.endswith('.png')            # text/plain header, PNG bytes
    for u, r in ok.iterrows():
        assert (dest/r.file).stat().st_size == r.bytes and len(r.hash) == 32


def test_undecodable_downloads_go_to_quarantine_and_verify_reuses_the_rest(faults):
    dest, df, _, _ = faults
    q = dest.parent/'images_quarantine'
    rep = pd.read_csv(q/'report.csv')
    # the data: URL's three zero bytes (content type image/png) are not an image either
    assert sorted(r.split(' (')[0] for r in rep.reason) == ['not an image', 'too many pixels', 'truncated image']
    assert sorted(f.relative_to(q).as_posix() for f in q.rglob('*.*') if f.name != 'report.csv') == sorted(rep.quarantined)
    for f in (fn for d in dest.iterdir() if d.is_dir() and not d.name.startswith('.') for fn in d.iterdir()):
        with Image.open(f) as im: im.load()                    # only decodable files reached the class folders
    v = verify_dataset(dest, progress=False, n_workers=0)
    assert v.ok.all() and v.reused.all() and len(v) == (df.status == 'ok').sum()   # checked on arrival: not decoded again
    (dest/v.file[0]).write_bytes(jpeg_bytes((10, 10))[:200])      # a file changed since: decoded again, and caught
    v2 = verify_dataset(dest, progress=False, n_workers=0, verbose=False)
    assert v2.reused.sum() == len(v) - 1 and v2.set_index('file').reason[v.file[0]] == 'truncated image'


def test_verify_false_leaves_checking_to_verify_dataset(server, tmp_path):
    urls = [server.img_url('0.jpg'), server.url('truncated', 'u'), server.url('bomb', 'u')]
    df = download_images(urls, tmp_path/'images', label='a', verify=False, **FAST)
    assert list(df.status) == ['ok']*3 and not (tmp_path/'images'/'.imgclean_cache').exists()
    v = verify_dataset(tmp_path/'images', progress=False, n_workers=0)
    assert sorted(r.split(' (')[0] for r in v.reason[~v.ok]) == ['too many pixels', 'truncated image'] and not v.reused.any()
    man = pd.read_csv(tmp_path/'images'/'manifest.csv', keep_default_na=False)
    assert man.reason.str.startswith('verify: ').sum() == 2


def test_download_max_size_resizes_on_arrival(server, tmp_path):
    df = download_images([server.img_url('5.jpg')], tmp_path/'d', label='a', max_size=20, **FAST)
    with Image.open(tmp_path/'d'/df.file[0]) as im: assert im.size == (20, 13) and (df.width[0], df.height[0]) == (20, 13)
    v = verify_dataset(tmp_path/'d', max_size=20, progress=False, n_workers=0, verbose=False)
    assert v.reused.all() and not verify_dataset(tmp_path/'d', max_size=10, progress=False, n_workers=0, verbose=False).reused.any()


def test_resume_skips_done_urls(server, tmp_path):
    urls = [server.img_url(f'{i}.jpg') for i in range(5)]
    d1 = download_images(urls[:3], tmp_path/'d', label='a', **FAST)
    assert (d1.status == 'ok').all()
    before = dict(server.hits)
    d2 = download_images(urls, tmp_path/'d', label='a', **FAST)
    assert list(d2.reason[:3]) == ['already downloaded']*3 and (d2.status == 'ok').all()
    assert all(server.hits.get(u.replace(server.base, ''), 0) == before.get(u.replace(server.base, ''), 0) for u in urls[:3])
    # an interrupted run (files but no manifest) resumes from the stable file names
    (tmp_path/'d'/'manifest.csv').unlink()
    d3 = download_images(urls, tmp_path/'d', label='a', **FAST)
    assert (d3.reason == 'already downloaded').all()
    assert 'already there' in summarize_downloads(d3)


def test_max_pics(server, tmp_path):
    urls = [server.img_url(f'{i}.jpg') for i in range(6)]
    df = download_images(urls, tmp_path/'d', max_pics=2, label='a', **FAST)
    assert (df.status == 'ok').sum() == 2 and df.reason.str.startswith('max_pics').sum() == 4
    assert len(list((tmp_path/'d'/'a').iterdir())) == 2


def test_url_file_parsing(tmp_path, server):
    raw = (b'\xef\xbb\xbfurl\r\n"' + server.img_url('0.jpg').encode() + b'"\r\n\r\n  ' + server.img_url('1.jpg').encode()
           + b'  \r\n' + server.img_url('caf\xe9.jpg').encode() + b'\n\xff\xfe garbage \x00\n')
    (tmp_path/'urls').mkdir(); (tmp_path/'urls'/'urls_cats.csv').write_bytes(raw)
    got = read_urls(tmp_path/'urls'/'urls_cats.csv')
    assert got[:3] == [server.img_url('0.jpg'), server.img_url('1.jpg'), server.img_url('caf%C3%A9.jpg')] and len(got) == 4
    df = download_images(tmp_path/'urls', tmp_path/'d', **FAST)
    assert list(df['class'].unique()) == ['cats'] and len(df) == 4
    assert list(df.status) == ['ok', 'ok', 'failed', 'failed']


def test_comment_lines_of_a_url_file_are_not_urls(tmp_path):
    (tmp_path/'urls_fox.txt').write_text('# foxes, from the 2024 search\nhttp://a.test/f.jpg\n  # http://a.test/removed.jpg\n')
    assert read_urls(tmp_path/'urls_fox.txt') == ['http://a.test/f.jpg']


@pytest.mark.parametrize('setup,exc,msg', [
    (lambda p: p/'missing', FileNotFoundError, 'does not exist'),
    (lambda p: (p/'empty').mkdir() or p/'empty', FileNotFoundError, 'no urls_<class>.csv'),
    (lambda p: (p/'e').mkdir() or (p/'e'/'urls_a.csv').write_text('\n\n') and p/'e', ValueError, 'no URLs'),
    (lambda p: (p/'m').mkdir() or (p/'m'/'urls_manifest.csv.csv').write_text('http://a.test/1.jpg') and p/'m', ValueError, 'names of files a download writes'),
    (lambda p: (p/'n').mkdir() or (p/'n'/'urls_.csv').write_text('http://a.test/1.jpg') and p/'n', ValueError, 'a class name is empty.*urls_<class>.csv'),
])
def test_bad_arguments(tmp_path, setup, exc, msg):
    with pytest.raises(exc, match=msg): download_images(setup(tmp_path), tmp_path/'d', progress=False)


def test_dest_is_a_file(tmp_path):
    (tmp_path/'f').write_text('x')
    with pytest.raises(ValueError, match='is a file'): download_images(['http://127.0.0.1:9/a.jpg'], tmp_path/'f', label='a')
    with pytest.raises(ValueError, match='label='): download_images(['http://127.0.0.1:9/a.jpg'], tmp_path/'d')
    for dest in ('s3://bucket/birds', 'memory://b/x'):   # not a folder named 's3:'; fastai's forms write to a local class folder
        with pytest.raises(ValueError, match="is a URL; fastai's call forms download into a local folder"): download_images(dest, urls=['http://127.0.0.1:9/a.jpg'])


def test_fetch_image_and_sniff(server):
    data, ext, _ = fetch_image(server.img_url('2.jpg'))
    assert ext == 'jpg' and Image.open(__import__('io').BytesIO(data)).size == (42, 30)
    with pytest.raises(FetchError, match='http 404'): fetch_image(server.url('404'))
    assert sniff_image(b'II*\x00rest') == 'tif' and sniff_image(b'GIF89a..') == 'gif' and sniff_image(b'') is None



# ---- one deadline per fetch (issue 13) ----

@pytest.fixture(scope='module')
def slow():
    "A fault server whose trickle (a byte every 0.5 s) and silent endpoints would hold a fetch for 30 s"
    with FaultServer({f'{i}.jpg': jpeg_bytes((40 + i, 30)) for i in range(8)}, trickle_for=30) as s: yield s


@pytest.mark.parametrize('kind', ['trickle', 'noheaders'])
def test_a_slow_server_costs_one_deadline(slow, tmp_path, kind):
    t0 = time.monotonic()
    df = download_images([slow.url(kind)], tmp_path/'d', label='a', timeout=2, retries=2, progress=False, verbose=False)
    took = time.monotonic() - t0
    assert took < 3.5, took                     # the deadline + slack, not the server's 30 s
    assert df.reason[0].startswith('timeout'), df.reason[0]


def test_trickle_among_good_urls_does_not_hold_the_run(slow, tmp_path):
    urls = [slow.img_url(f'{i}.jpg') for i in range(8)] + [slow.url('trickle', 'x'), slow.url('noheaders', 'y')]
    t0 = time.monotonic()
    df = download_images(urls, tmp_path/'d', label='a', timeout=2, progress=False, verbose=False)
    assert time.monotonic() - t0 < 4
    assert list(df.status) == ['ok']*8 + ['failed']*2


def test_fetch_image_deadline_bounds_the_body(slow):
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r'timeout \(over 1\.5s in all\)'): fetch_image(slow.url('trickle', 'z'), timeout=1.5)
    assert time.monotonic() - t0 < 2.2
    t0 = time.monotonic()   # the older form: `timeout` is the idle limit, `total_timeout` the deadline
    with pytest.raises(FetchError, match='timeout'): fetch_image(slow.url('trickle', 'w'), timeout=1, total_timeout=2)
    assert time.monotonic() - t0 < 2.7


def test_cli_download_of_a_trickle_url_ends_at_its_timeout(slow, tmp_path):
    "`imgclean download` with --timeout 2 and one trickling URL: about 2 s, not the 30 s the server would take"
    (tmp_path/'urls').mkdir(); (tmp_path/'urls'/'urls_a.csv').write_text(slow.url('trickle', 'cli') + '\n')
    from imgclean.cli import main
    t0 = time.monotonic()
    with pytest.raises(SystemExit): main(['download', str(tmp_path/'urls'), str(tmp_path/'d'), '--timeout', '2', '--no-progress'])
    assert time.monotonic() - t0 < 4
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    assert man.reason[0].startswith('timeout')


def test_name_resolution_is_bounded(monkeypatch, tmp_path):
    "A resolver that hangs (a broken DNS server) costs the fetch its deadline; the standard library alone would wait it out"
    real = socket.getaddrinfo
    def hanging(host, *a, **kw):
        if host == 'slow-dns.test': time.sleep(20)
        return real(host, *a, **kw)
    monkeypatch.setattr(socket, 'getaddrinfo', hanging)   # the resolver is the environment, not our code
    t0 = time.monotonic()
    df = download_images(['http://slow-dns.test/a.jpg'], tmp_path/'d', label='a', timeout=1.5, retries=0, progress=False, verbose=False)
    assert time.monotonic() - t0 < 2.5 and df.reason[0].startswith('timeout'), df.reason[0]


def test_reasons_do_not_echo_addresses_or_socket_errors(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]   # a closed port
    df = download_images([f'http://localhost:{port}/a.jpg', 'http://no-such-host.invalid/a.jpg'], tmp_path/'d', label='a',
                         timeout=3, retries=0, progress=False, verbose=False)
    assert df.reason[0] == 'connection refused'
    assert df.reason[1] in ('host not found', 'timeout (over 3s in all)') or df.reason[1].startswith('timeout (name resolution')   # a resolver without network may hang: bounded
    assert not df.reason.str.contains(r'127\.0\.0\.1|::1|Errno|\[', regex=True).any()


def test_fetch_image_result_and_max_pixels_reason(server, tmp_path):
    "max_pixels is an option of download: the reason names the limit and how to raise it, and raising it keeps the image"
    df = download_images([server.url('bomb', 'mp')], tmp_path/'d', label='a', progress=False, verbose=False)
    assert 'over max_pixels 89,478,485' in df.reason[0] and 'pass max_pixels= (on the command line: --max-pixels) to accept larger images' in df.reason[0]
    big = download_images([server.img_url('5.jpg')], tmp_path/'e', label='a', max_pixels=100, progress=False, verbose=False)
    assert 'over max_pixels 100' in big.reason[0]
    assert download_images([server.img_url('5.jpg')], tmp_path/'f', label='a', max_pixels=10_000, progress=False, verbose=False).status[0] == 'ok'


# ---- fastai's call forms (issue 12) ----

def test_fastai_v2_urls_form(server, tmp_path):
    "download_images(dest, urls=...) as the book and the 2022 course call it, class by class: images straight into dest"
    path = tmp_path/'bears'
    for i, o in enumerate(('grizzly', 'black')):
        dest = path/o; dest.mkdir(parents=True, exist_ok=True)
        df = download_images(dest, urls=L(server.img_url(f'{j}.jpg') for j in range(3*i, 3*i + 3)))
        assert df.attrs['options']['n_workers'] == 8 and df.attrs['options']['timeout'] == 4 and df.attrs['options']['max_pics'] == 1000
    assert sorted(p.parent.name for p in path.glob('*/*.jpg')) == ['black']*3 + ['grizzly']*3
    man = pd.read_csv(path/'manifest.csv', keep_default_na=False)   # one manifest for the dataset, both classes
    assert sorted(man['class']) == ['black']*3 + ['grizzly']*3 and (man.status == 'ok').all()
    again = download_images(path/'grizzly', urls=[server.img_url(f'{j}.jpg') for j in range(3)], progress=False, verbose=False)
    assert (again[again['class'] == 'grizzly'].reason == 'already downloaded').all()   # a rerun of the cell resumes


def test_fastai_v2_url_file_max_pics_and_preserve_filename(server, tmp_path):
    (tmp_path/'urls.txt').write_text('\n'.join(server.img_url(f'{j}.jpg') for j in range(5)) + '\n')
    df = download_images(tmp_path/'bears'/'teddy', url_file=tmp_path/'urls.txt', max_pics=2, progress=False, verbose=False)
    assert (df.status == 'ok').sum() == 2 and len(list((tmp_path/'bears'/'teddy').iterdir())) == 2
    df = download_images(dest=tmp_path/'named', url_file=tmp_path/'urls.txt', preserve_filename=True, progress=False, verbose=False)
    assert sorted(p.name for p in (tmp_path/'named').iterdir()) == [f'{j}.jpg' for j in range(5)]


def test_fastai_v1_form(server, tmp_path):
    "download_images(path/file, dest, max_pics=N) as the 2019 lesson-2 notebook calls it: images into dest"
    (tmp_path/'urls_black.csv').write_text('\n'.join(server.img_url(f'{j}.jpg') for j in range(4)) + '\n')
    df = download_images(tmp_path/'urls_black.csv', tmp_path/'black', max_pics=3, max_workers=2, progress=False, verbose=False)
    assert (df.status == 'ok').sum() == 3 and len(list((tmp_path/'black').glob('*.jpg'))) == 3
    assert df.attrs['options']['n_workers'] == 2
    ours = download_images(tmp_path/'urls_black.csv', tmp_path/'ds', label='black', progress=False, verbose=False)   # with label: ours
    assert len(list((tmp_path/'ds'/'black').glob('*.jpg'))) == 4 and ours.attrs['options']['n_workers'] == 64


@pytest.mark.parametrize('kw,msg', [
    (dict(urls=['http://a.test/1.jpg'], url_file='u.txt'), 'not both'),
    (dict(), 'no URLs given'),
    (dict(url_file='missing.txt'), 'does not exist'),
])
def test_fastai_form_bad_arguments(tmp_path, kw, msg):
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        download_images(tmp_path/'d', **{k: (tmp_path/v if k == 'url_file' else v) for k, v in kw.items()})


# ---- a run interrupted by Ctrl-C, through the public API in a separate process ----

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_leaves_a_manifest_and_a_rerun_resumes(tmp_path, sig):
    "Ctrl-C, or SIGTERM (which used to end the run with no manifest), in the threads of one process"
    files = {f'{i}.jpg': jpeg_bytes((40 + i, 30)) for i in range(12)}
    with FaultServer(files, latency=0.25) as s:
        urls = [s.img_url(f'{i}.jpg') for i in range(12)]
        code = textwrap.dedent(f"""
            import signal, sys; from imgclean.download import download_images
            signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal (a run started in the background ignores it)
            download_images({urls!r}, {str(tmp_path/'d')!r}, label='a', n_workers=1, progress=False, verbose=False)
        """)
        p = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
        t0 = time.monotonic()
        while not (tmp_path/'d'/'a').is_dir() or len(list((tmp_path/'d'/'a').iterdir())) < 2:
            assert time.monotonic() - t0 < 60 and p.poll() is None; time.sleep(0.05)
        p.send_signal(sig); p.wait(30)
        man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
        assert len(man) == 12 and man.reason.str.startswith('interrupted (rerun to resume)').sum() >= 1
        assert not [q for q in (tmp_path/'d').rglob('*') if q.name.endswith('.tmp')]   # no half-written file
        done = set(man.url[man.status == 'ok'])
        df = download_images(urls, tmp_path/'d', label='a', progress=False, verbose=False)
    assert (df.status == 'ok').all() and set(df.url[df.reason == 'already downloaded']) == done


def test_the_same_image_in_two_classes_is_a_duplicate_within_each(server, tmp_path):
    "Two URLs with the same bytes in each of two classes: one kept per class (the first listed), the other skipped"
    urls = {c: [server.url('dupA', c), server.url('dupB', c)] for c in ('x', 'y')}
    df = download_images(urls, tmp_path/'d', **FAST, verbose=False)
    assert list(df.status) == ['ok', 'skipped', 'ok', 'skipped'], list(df.reason)
    assert sorted(p.parent.name for p in (tmp_path/'d').glob('[xy]/*')) == ['x', 'y']


def test_a_copy_written_meanwhile_by_an_older_run_is_reused_not_doubled(tmp_path):
    "An older run (a killed cluster run's orphaned worker) writes a URL's file after this run planned: one file, not two"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    from imgclean.download import _file_stem
    data, dest = jpeg_bytes((44, 33)), tmp_path/'d'
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            (dest/'a').mkdir(parents=True, exist_ok=True)
            (dest/'a'/f'{_file_stem(url, "a")}.jpg').write_bytes(data)   # the older run's late write, after this run's resume step
            self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.send_header('Content-Length', str(len(data)))
            self.end_headers(); self.wfile.write(data)
    srv = ThreadingHTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{srv.server_address[1]}/x.jpg'
        df = download_images([url], dest, label='a', progress=False, verbose=False, retries=0, timeout=10)
    finally: srv.shutdown(); srv.server_close()
    assert list(df.status) == ['ok'] and [f.name for f in (dest/'a').iterdir()] == [f'{_file_stem(url, "a")}.jpg']
    assert (dest/df.file[0]).read_bytes() == data


# ---- the local engine in several download processes (processes=) ----

def _two_hosts(urls): return urls + [u.replace('127.0.0.1', 'localhost') for u in urls]


def test_download_processes_show_progress(server, tmp_path, capsys):
    "The default progress bar works with download processes (it crashed: fastprogress starts its clock only when iterated)"
    urls = {'a': _two_hosts([server.img_url(f'{i}.jpg') for i in range(3)]), 'b': _two_hosts([server.img_url(f'{i}.jpg') for i in range(3, 6)])}
    df = download_images(urls, tmp_path/'d', max_pics=2, processes=2, verbose=False, timeout=5)
    assert set(df.status) == {'ok', 'skipped'} and (df.status == 'ok').sum() == 4   # 2 a class; the rest over max_pics or the same bytes
    assert '12/12' in capsys.readouterr().out.replace('\r', '\n')   # the bar ends full, max_pics' skips counted


def test_download_processes_give_the_same_manifest_and_files_as_threads(server, tmp_path):
    "processes=2 (URLs split by host between two processes) writes the manifest, files and quarantine that threads write"
    s = server
    urls = {'a': _two_hosts([s.img_url(f'{i}.jpg') for i in range(4)] + [s.url(k) for k in ('404', 'html', 'truncated', 'empty', 'bomb')]),
            'b': _two_hosts([s.img_url(f'{i}.jpg') for i in (4, 5, 0)])}
    got = {}
    for n in (1, 2):
        df = download_images(urls, tmp_path/f'd{n}', processes=n, quarantine=tmp_path/f'q{n}', **FAST, verbose=False)
        assert df.attrs['options']['processes'] == n
        files = {p.relative_to(tmp_path/f'd{n}').as_posix(): p.read_bytes() for p in (tmp_path/f'd{n}').rglob('*.*') if p.parent.name in 'ab'}
        quarantined = sorted(p.relative_to(tmp_path/f'q{n}').as_posix() for p in (tmp_path/f'q{n}').rglob('*.*'))
        got[n] = df.drop(columns='reason'), df.reason.str.replace(str(tmp_path/f'q{n}'), 'Q'), files, quarantined
    for a, b in zip(got[1], got[2]): assert a.equals(b) if hasattr(a, 'equals') else a == b
    assert list(got[2][0].status.value_counts().sort_index().items()) == [('failed', 10), ('ok', 6), ('skipped', 8)]
    assert len(got[2][2]) == 6 and len(got[2][3]) == 5   # 6 images kept; truncated and bomb quarantined from each host, and the report


def _proc_children(pid):
    "Ids of the processes whose parent is `pid` (Linux /proc)"
    out = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try: stat = (d/'stat').read_text()
        except OSError: continue
        if int(stat.rsplit(')', 1)[1].split()[1]) == pid: out.append(int(d.name))
    return out


def _alive(pid):
    try: return (Path('/proc')/str(pid)/'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads /proc to find the download processes')
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_run_leaves_no_download_process_and_a_rerun_resumes(tmp_path, sig):
    "Ctrl-C or SIGTERM stops the download processes (manifest written, rerun resumes; SIGTERM used to end the run with no manifest); a killed run's processes end on their own"
    files = {f'{i}.jpg': jpeg_bytes((40 + i, 30)) for i in range(16)}
    with FaultServer(files, latency=0.25) as s:
        urls = _two_hosts([s.img_url(f'{i}.jpg') for i in range(8)])
        code = textwrap.dedent(f"""
            import signal; from imgclean.download import download_images
            signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal (a run started in the background ignores it)
            download_images({urls!r}, {str(tmp_path/'d')!r}, label='a', n_workers=2, processes=2, progress=False, verbose=False)
        """)
        p = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
        t0 = time.monotonic()
        while not (tmp_path/'d'/'a').is_dir() or len(list((tmp_path/'d'/'a').glob('*.jpg'))) < 2:
            assert time.monotonic() - t0 < 60 and p.poll() is None; time.sleep(0.05)
        kids = _proc_children(p.pid)
        assert len(kids) == 2, kids
        p.send_signal(sig); p.wait(30)
        t0 = time.monotonic()
        while any(_alive(k) for k in kids): assert time.monotonic() - t0 < 15, 'a download process outlived its run'; time.sleep(0.1)
        if sig != signal.SIGKILL:
            man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
            assert len(man) == 16 and man.reason.str.startswith('interrupted (rerun to resume)').sum() >= 1 and (man.status == 'ok').sum() >= 2
            assert not [q for q in (tmp_path/'d').rglob('*') if q.name.endswith('.tmp')]
            done = set(man.url[man.status == 'ok'])
        df = download_images(urls, tmp_path/'d', label='a', processes=2, progress=False, verbose=False)
    assert (df.status == 'ok').sum() == 8 and (df.status == 'skipped').sum() == 8   # the localhost copies are the same bytes
    if sig != signal.SIGKILL: assert done <= set(df.url[df.reason == 'already downloaded'])


@contextlib.contextmanager
def _two_process_run(tmp_path, prelude, opts, **popen):
    "A download of 8 slow URLs on two hosts with 2 processes, in its own session; yields it once 2 files are stored and both processes run"
    files = {f'{i}.jpg': jpeg_bytes((40 + i, 30)) for i in range(16)}
    with FaultServer(files, latency=0.25) as s:
        urls = _two_hosts([s.img_url(f'{i}.jpg') for i in range(8)])
        code = (f"{prelude}from imgclean.download import download_images; "
                f"download_images({urls!r}, {str(tmp_path/'d')!r}, label='a', n_workers=2, processes=2, {opts})")
        p = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])}, start_new_session=True, **popen)
        t0 = time.monotonic()
        while not (tmp_path/'d'/'a').is_dir() or len(list((tmp_path/'d'/'a').glob('*.jpg'))) < 2:
            assert time.monotonic() - t0 < 60 and p.poll() is None; time.sleep(0.05)
        while len(_proc_children(p.pid)) < 2: assert time.monotonic() - t0 < 60; time.sleep(0.05)
        yield p


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads /proc to find the download processes')
def test_a_sigterm_to_the_whole_process_group_still_names_the_stored_files(tmp_path):
    "kill -- -PGID (systemd, Slurm) reaches the download processes too: they stop as on their run's stop and write their shard files"
    with _two_process_run(tmp_path, '', "progress=False, verbose=False") as p:
        os.killpg(p.pid, signal.SIGTERM); p.wait(30)
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    stored = {f.relative_to(tmp_path/'d').as_posix() for f in (tmp_path/'d'/'a').glob('*.jpg')}
    assert stored and set(man.file[man.status == 'ok']) == stored, (sorted(stored), list(man.reason))


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads /proc to find the download processes')
def test_a_ctrl_c_reaching_only_the_download_processes_is_a_stop_not_a_normal_end(tmp_path):
    "A run that ignores SIGINT (a background job) whose download processes get a Ctrl-C: it says it stopped and how to resume, and raises as a stop"
    with _two_process_run(tmp_path, "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); ", "progress=False",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        os.killpg(p.pid, signal.SIGINT); out, err = p.communicate(timeout=30)
    assert p.returncode != 0 and 'run the same command again to resume' in err, (p.returncode, out, err[-500:])


# ---- destinations at fsspec URLs (memory://, file://, s3://...): staged here, then uploaded ----
import fsspec  # noqa: E402
from fsspec.implementations.memory import MemoryFileSystem  # noqa: E402

KW = dict(FAST, verbose=False)


def fs_files(url):
    "{path under `url`: bytes} of the images at the fsspec `url` (class folders only)"
    fs, p = fsspec.core.url_to_fs(url)
    return {f[len(p) + 1:]: fs.cat_file(f) for f in fs.find(p) if not f[len(p) + 1:].startswith(('.', 'manifest'))}


def local_files(root): return {f.relative_to(root).as_posix(): f.read_bytes() for f in Path(root).glob('[!._]*/*') if f.is_file()}


def hits_of(server, urls):
    "Requests `server` got for `urls` so far"
    return sum(server.hits.get(u.replace(server.base, ''), 0) for u in urls)


@pytest.fixture
def lists(server):
    "Two classes: images, one image behind two URLs, a 404 and a truncated JPEG (quarantined)"
    return {'a': [server.img_url(f'{i}.jpg') for i in range(4)] + [server.url('dupA'), server.url('dupB'), server.url('truncated')],
            'b': [server.img_url('4.jpg'), server.img_url('0.jpg'), server.url('404')]}


@pytest.fixture
def mem_url():
    "A fresh memory:// destination, removed afterwards"
    url = f'memory://imgclean-test-{os.getpid()}-{time.monotonic_ns()}/data'
    yield url
    fs, p = fsspec.core.url_to_fs(url)
    for d in (p, p + '_quarantine'):
        if fs.exists(d): fs.rm(d, recursive=True)


def same_as_local(df, ref, url, root):
    key = ['class', 'url', 'status', 'file', 'bytes', 'width', 'height', 'hash']
    pd.testing.assert_frame_equal(df[key], ref[key])
    assert fs_files(url) == local_files(root) and len(fs_files(url)) == (ref.status == 'ok').sum()
    fs, p = fsspec.core.url_to_fs(url)
    man = pd.read_csv(io.BytesIO(fs.cat_file(p + '/manifest.csv')), keep_default_na=False)
    assert man.status.tolist() == ref.status.tolist() and not fs.exists(p + '/.imgclean_shards')
    assert sorted(f.rsplit('/', 1)[-1] for f in fs.find(p + '_quarantine')) == sorted(f.name for f in Path(str(root) + '_quarantine').rglob('*') if f.is_file())


@pytest.mark.parametrize('kind', ['memory', 'file'])
def test_an_fsspec_destination_gets_the_local_files_and_manifest_and_a_rerun_fetches_nothing(server, lists, tmp_path, mem_url, kind):
    ref = download_images(lists, tmp_path/'local', **KW)
    url = mem_url if kind == 'memory' else f'file://{tmp_path}/remote'
    df = download_images(lists, url, **KW)
    same_as_local(df, ref, url, tmp_path/'local')
    assert (tmp_path/'remote_quarantine'/'report.csv').is_file() if kind == 'file' else True
    ok = ref.url[ref.status == 'ok'].tolist()
    before = hits_of(server, ok)
    again = download_images(lists, url, **KW)   # read from the destination: nothing fetched again
    assert hits_of(server, ok) == before and (again.reason == 'already downloaded').sum() == (ref.status == 'ok').sum()
    assert fs_files(url) == local_files(tmp_path/'local')


def test_download_processes_to_an_fsspec_destination(server, lists, tmp_path):
    with FaultServer({f'{i}.jpg': jpeg_bytes((50 + i, 30), (9, i*30, 90)) for i in range(5)}, host='127.0.0.2') as other:
        lists = {**lists, 'c': [other.img_url(f'{i}.jpg') for i in range(5)]}   # two hosts: two processes
        ref = download_images(lists, tmp_path/'local', **KW)
        df = download_images(lists, f'file://{tmp_path}/remote', processes=2, **KW)
    assert df.attrs['options']['processes'] == 2
    same_as_local(df, ref, f'file://{tmp_path}/remote', tmp_path/'local')


class BrokenStore(MemoryFileSystem):
    "memory:// (the same store) whose uploads fail after `ok` files: a run killed between uploads"
    protocol, ok = ('imgclean-broken',), 0
    @classmethod
    def _strip_protocol(cls, path): return super()._strip_protocol(path.replace('imgclean-broken://', 'memory://', 1))
    def put_file(self, lpath, rpath, *a, **kw):
        if BrokenStore.ok <= 0: raise OSError('connection to the store lost')
        BrokenStore.ok -= 1
        return super().put_file(lpath, rpath, *a, **kw)


def test_a_run_interrupted_between_uploads_leaves_no_false_manifest_and_resumes(server, lists, tmp_path, mem_url):
    fsspec.register_implementation('imgclean-broken', BrokenStore, clobber=True)
    ref = download_images(lists, tmp_path/'local', **KW)
    BrokenStore.ok = 4   # the quarantined file and its report, then two images
    with pytest.raises(OSError, match='connection to the store lost'):
        download_images(lists, mem_url.replace('memory://', 'imgclean-broken://'), **KW)
    fs, p = fsspec.core.url_to_fs(mem_url)
    got = fs_files(mem_url)
    assert 1 <= len(got) <= 3 and not fs.exists(p + '/manifest.csv')   # some files; no manifest naming missing ones
    ok = ref.url[ref.status == 'ok'].tolist()
    before = hits_of(server, ok)
    df = download_images(lists, mem_url, **KW)
    assert (df.reason == 'already downloaded').sum() == len(got)   # found by their names, not fetched again
    assert hits_of(server, ok) - before == len(ok) - len(got)
    same_as_local(df, ref, mem_url, tmp_path/'local')


def test_bad_fsspec_destinations_fail_before_any_request(server, tmp_path):
    import importlib.util
    urls = [server.img_url('0.jpg')]
    before = dict(server.hits)
    with pytest.raises(ValueError, match='fsspec knows no protocol nosuchproto://'): download_images(urls, 'nosuchproto://x/y', label='a')
    missing = [(p, m) for p, m in (('s3', 's3fs'), ('gs', 'gcsfs'), ('abfs', 'adlfs'), ('oci', 'ocifs')) if importlib.util.find_spec(m) is None]
    if not missing: pytest.skip('every backend tried is installed')
    proto, mod = missing[0]
    with pytest.raises(ImportError, match=f'needs its fsspec backend: pip install {mod}'): download_images(urls, f'{proto}://bucket/x', label='a')
    (tmp_path/'f').write_text('x')
    with pytest.raises(PermissionError, match='cannot write to file://'): download_images(urls, f'file://{tmp_path}/f/sub', label='a')
    with pytest.raises(ValueError, match='is a file'): download_images(urls, f'file://{tmp_path}/f', label='a')
    assert server.hits == before


def test_preserved_names_do_not_overwrite_files_stored_at_the_url(server, mem_url):
    "preserve_filename: a second run's 0.jpg from another host is stored as 0_1.jpg, not over the first run's 0.jpg (staging cannot see it)"
    with FaultServer({'0.jpg': jpeg_bytes((44, 33), (1, 200, 3))}, host='127.0.0.2') as other:   # the same file name, other bytes
        first = download_images([server.img_url('0.jpg')], mem_url, label='a', preserve_filename=True, **KW)
        second = download_images([server.img_url('0.jpg'), other.img_url('0.jpg')], mem_url, label='a', preserve_filename=True, **KW)
    assert first.file.tolist() == ['a/0.jpg'] and second.file.tolist() == ['a/0.jpg', 'a/0_1.jpg'], second[['file', 'reason']]
    got = fs_files(mem_url)
    assert got['a/0.jpg'] == server.files['0.jpg'] and got['a/0_1.jpg'] == other.files['0.jpg']


@pytest.mark.parametrize('processes', [1, 2])
def test_a_rerun_after_a_kill_keeps_a_resized_image_once(tmp_path, processes):
    "A file a killed run stored (resized, no manifest) and a new URL with the same bytes: one copy, whichever hash each was known by"
    with FaultServer({'a.jpg': jpeg_bytes((200, 150)), 'b.jpg': jpeg_bytes((200, 150))}) as s:
        u1, u2 = s.img_url('a.jpg'), s.img_url('b.jpg').replace('127.0.0.1', 'localhost')   # two hosts: one per download process
        kw = dict(label='a', max_size=64, processes=processes, progress=False, verbose=False, timeout=10)
        download_images([u1], tmp_path/'d', **kw)
        (tmp_path/'d'/'manifest.csv').unlink()   # what a SIGKILL before the manifest leaves: the file, no row
        df = download_images([u1, u2], tmp_path/'d', **kw)
    assert list(df.status) == ['ok', 'skipped'], list(df.reason)
    assert len(list((tmp_path/'d'/'a').iterdir())) == 1
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    assert man.hash[0] == file_hash(tmp_path/'d'/man.file[0])   # `hash` is the stored file's, however the row was made


class _Gate:
    "A loopback server whose /good/<n> answers (an image) only once `parties` requests wait there (or `go` is set); /bad/<n> a truncated JPEG at once"
    def __init__(self, parties=2):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading
        self.barrier, self.go, gate = threading.Barrier(parties, timeout=20), threading.Event(), self
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                n = int(self.path.rsplit('/', 1)[1])
                data = jpeg_bytes((40 + n, 30), (n*7 % 255, 80, 120))
                if self.path.startswith('/good/'):
                    if not gate.go.is_set():
                        try: gate.barrier.wait()
                        except threading.BrokenBarrierError: gate.go.wait(20)
                else: data = data[:len(data)//2]
                self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.send_header('Content-Length', str(len(data)))
                self.end_headers(); self.wfile.write(data)
        self.srv = ThreadingHTTPServer(('127.0.0.1', 0), H); self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.base = f'http://127.0.0.1:{self.srv.server_address[1]}'
    def __enter__(self): return self
    def __exit__(self, *a): self.go.set(); self.barrier.abort(); self.srv.shutdown(); self.srv.server_close()


def test_runs_for_two_classes_into_one_dest_at_once_keep_both_classes_rows(tmp_path):
    "One run a class, at once, into one dest: each started before the other wrote; the manifest, report and verify record hold both"
    from concurrent.futures import ThreadPoolExecutor
    from imgclean.images import read_verdicts
    with _Gate(2) as g, ThreadPoolExecutor(2) as ex:   # each run's good URL waits for the other's: both read the manifest before either writes it
        runs = [ex.submit(download_images, [f'{g.base}/good/{i}', f'{g.base}/bad/{i}'], tmp_path/'d', label=c, progress=False, verbose=False,
                          timeout=30, quarantine=tmp_path/'q') for i, c in enumerate(('cat', 'dog'))]
        for r in runs: r.result(60)
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    assert man.groupby('class').status.apply(list).to_dict() == {'cat': ['ok', 'failed'], 'dog': ['ok', 'failed']}
    assert sorted(pd.read_csv(tmp_path/'q'/'report.csv').label) == ['cat', 'dog']
    assert sorted(f.split('/')[0] for f in read_verdicts(tmp_path/'d')) == ['cat', 'dog']


def test_a_second_run_into_a_class_being_downloaded_is_refused(tmp_path):
    "Two runs into one class at once would each write the class's rows as they saw them: the second is refused, saying what to do"
    from concurrent.futures import ThreadPoolExecutor
    with _Gate(2) as g, ThreadPoolExecutor(1) as ex:
        first = ex.submit(download_images, [f'{g.base}/good/1'], tmp_path/'d', label='cat', progress=False, verbose=False, timeout=30)
        t0 = time.monotonic()
        while not g.barrier.n_waiting: assert time.monotonic() - t0 < 20; time.sleep(0.02)
        with pytest.raises(BlockingIOError, match='another run is downloading into .*cat.*then run this again'):
            download_images([f'{g.base}/good/2'], tmp_path/'d', label='cat', progress=False, verbose=False, timeout=30)
        g.go.set(); g.barrier.abort()
        assert list(first.result(60).status) == ['ok']


class _Slow:
    "A loopback server that holds each request `hold` seconds (`stall`: headers first, then nothing), counting the requests it got and when"
    def __init__(self, hold=3.0, stall=False):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading
        self.hits, slow = [], self
        class H(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_GET(self):
                slow.hits.append(time.monotonic())
                data = jpeg_bytes((40 + int(self.path.strip('/')), 30))
                self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.send_header('Content-Length', str(len(data)))
                if stall: self.end_headers(); self.wfile.flush(); time.sleep(hold); return
                time.sleep(hold); self.end_headers(); self.wfile.write(data)
        self.srv = ThreadingHTTPServer(('127.0.0.1', 0), H); self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.urls = [f'http://127.0.0.1:{self.srv.server_address[1]}/{i}' for i in range(20)]
    def __enter__(self): return self
    def __exit__(self, *a): self.srv.shutdown(); self.srv.server_close()

    def run(self, dest, n_hits, sigints, **kw):
        "A threaded run into `dest` in a new process; Ctrl-C once `n_hits` requests came (then again after each delay in `sigints`); its stderr"
        code = textwrap.dedent(f"""
            import signal; from imgclean.download import download_images
            signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal
            download_images({self.urls!r}, {str(dest)!r}, label='a', processes=1, **{ {'progress': False, 'verbose': False, **kw}!r})
        """)
        p = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])},
                             stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while len(self.hits) < n_hits: assert time.monotonic() - t0 < 60 and p.poll() is None; time.sleep(0.02)
        self.t_int = time.monotonic(); p.send_signal(signal.SIGINT)
        for s in sigints: time.sleep(s); p.send_signal(signal.SIGINT)
        return p.communicate(timeout=60)[1]


def test_ctrl_c_starts_no_new_request_and_says_it_waits_for_those_in_flight(tmp_path):
    "Fetches waiting for a slot of their host (per_host=2) never start after Ctrl-C; the run says what it waits for"
    with _Slow(hold=4, stall=True) as s:
        err = s.run(tmp_path/'d', 2, [], per_host=2, n_workers=8, timeout=3)
    assert [h for h in s.hits if h > s.t_int] == []   # old code: the waiting threads took the slots as the stalled fetches timed out
    assert 'stopping: waiting for 2 fetches in flight (at most 3s)' in err
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    assert (man.reason == 'interrupted (rerun to resume)').sum() == 18


def test_a_second_ctrl_c_still_writes_the_manifest_after_the_files_in_flight(tmp_path):
    "Ctrl-C twice with slow fetches in flight: the manifest names every file those fetches stored"
    with _Slow(hold=3) as s:
        err = s.run(tmp_path/'d', 4, [0.5], per_host=4, n_workers=4, timeout=10)
    man = pd.read_csv(tmp_path/'d'/'manifest.csv', keep_default_na=False)
    files = sorted(f'a/{f.name}' for f in (tmp_path/'d'/'a').iterdir())
    assert sorted(man.file[man.status == 'ok']) == files and len(files) == 4, (files, err)
    assert 'still stopping' in err


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() != 0 or not shutil.which('setpriv'), reason='runs downloads as the user nobody (needs root and setpriv)')
def test_an_unwritable_quarantine_place_is_avoided_or_refused_before_any_request(server):
    "fastai's form in a project folder whose parent is not ours: the quarantine goes inside, hidden; a quarantine= we cannot write: a clear error first"
    home = Path(tempfile.mkdtemp())
    try:
        os.chmod(home, 0o755); proj = home/'alice'; proj.mkdir(); os.chown(proj, 65534, 65534)
        good, bad, other = server.img_url('0.jpg'), server.url('truncated', 'nobody'), server.img_url('5.jpg')
        before = server.hits.get('/img/5.jpg', 0)
        code = textwrap.dedent(f"""
            from imgclean.download import download_images
            download_images('grizzly', urls={[good, bad]!r}, progress=False)
            try: download_images({[other]!r}, 'data', label='cat', quarantine={str(home/'q')!r}, progress=False)
            except PermissionError as e: print('refused:', e)
        """)
        r = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', sys.executable, '-c', code], cwd=proj, timeout=120,
                           env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1]), 'HOME': str(proj)}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert [f.name for f in (proj/'.imgclean_quarantine'/'grizzly').iterdir()] and len(list((proj/'grizzly').iterdir())) == 1
        assert f"refused: cannot write the quarantine folder {home/'q'}" in r.stdout and 'pass quarantine=' in r.stdout, r.stdout
        assert server.hits.get('/img/5.jpg', 0) == before and not (proj/'data'/'cat').exists()   # refused before any request
    finally: shutil.rmtree(home)


def test_a_verify_rerun_checks_the_files_a_verify_false_run_stored(server, tmp_path):
    "verify=False, then the same URLs with verify=True: the truncated file goes to quarantine, as on arrival; the good ones are recorded"
    from imgclean.images import read_verdicts
    urls = [server.img_url('0.jpg'), server.img_url('1.jpg'), server.url('truncated', 'vf')]
    download_images(urls, tmp_path/'d', label='a', verify=False, **KW)
    df = download_images(urls, tmp_path/'d', label='a', **KW)
    assert list(df.status) == ['ok', 'ok', 'failed'] and df.reason[2].startswith('verify: truncated image'), list(df.reason)
    assert sorted(read_verdicts(tmp_path/'d')) == sorted(df.file[:2]) and len(list((tmp_path/'d'/'a').iterdir())) == 2
    rep = pd.read_csv(tmp_path/'d_quarantine'/'report.csv')
    assert rep[['label', 'reason']].values.tolist() == [['a', 'truncated image']] and (tmp_path/'d_quarantine'/rep.quarantined[0]).is_file()


def test_retry_after_of_a_429_is_waited_for(tmp_path):
    "A host that rate-limits for 2 s and says so (Retry-After: 2): the retry waits for it (backoff alone would retry within 0.2 s)"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    data, hits = jpeg_bytes((44, 33)), []
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            hits.append(time.monotonic())
            if hits[-1] - hits[0] < 2: self.send_response(429); self.send_header('Retry-After', '2'); self.send_header('Content-Length', '0'); self.end_headers(); return
            self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.send_header('Content-Length', str(len(data)))
            self.end_headers(); self.wfile.write(data)
    srv = ThreadingHTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: df = download_images([f'http://127.0.0.1:{srv.server_address[1]}/x.jpg'], tmp_path/'d', label='a', retries=2, backoff=0.05, timeout=5, progress=False, verbose=False)
    finally: srv.shutdown(); srv.server_close()
    assert list(df.status) == ['ok'] and len(hits) == 2, (list(df.reason), len(hits))


def test_an_interrupted_run_says_how_far_it_got_and_how_to_resume(tmp_path):
    with _Slow(hold=4, stall=True) as s:
        err = s.run(tmp_path/'d', 2, [], per_host=2, n_workers=8, timeout=3, verbose=True)
    assert f"stopped: 2 of 20 URLs done, in {tmp_path/'d'/'manifest.csv'}; run the same command again to resume" in err, err


def test_a_rerun_with_a_smaller_max_size_resizes_the_images_already_there(tmp_path):
    "max_size is the longest side of the stored images: a rerun with a smaller one resizes what earlier runs kept, and the manifest says so"
    with FaultServer({f'{i}.jpg': jpeg_bytes((400, 300), (i*40, 90, 200)) for i in range(2)}) as s:
        urls = [s.img_url(f'{i}.jpg') for i in range(2)]
        download_images(urls[:1], tmp_path/'d', label='a', **KW)
        df = download_images(urls, tmp_path/'d', label='a', max_size=100, **KW)
    assert [Image.open(tmp_path/'d'/f).size for f in df.file] == [(100, 75), (100, 75)]
    assert df[['width', 'height']].astype(int).values.tolist() == [[100, 75], [100, 75]]
    assert list(df.bytes) == [(tmp_path/'d'/f).stat().st_size for f in df.file] and list(df.hash) == [file_hash(tmp_path/'d'/f) for f in df.file]


def test_class_names_from_file_names_are_trimmed_and_same_named_lists_add_up(tmp_path):
    from imgclean.download import _url_lists
    (tmp_path/'urls_ dog .csv').write_text('http://a.test/1.jpg\n')
    (tmp_path/'urls_dog.txt').write_text('http://a.test/2.jpg\n')     # the same class saved twice, as .csv and .txt
    (tmp_path/'urls_cat.csv').write_text('http://a.test/3.jpg\n')
    assert _url_lists(tmp_path, None) == {'cat': ['http://a.test/3.jpg'], 'dog': ['http://a.test/1.jpg', 'http://a.test/2.jpg']}


def test_one_url_in_two_classes_gets_two_names_so_the_books_move_loop_works(server, tmp_path):
    "Overlapping search results: one URL in 'grizzly' and 'black' got the same name in both folders, and the book's shutil.move failed"
    import shutil
    url = server.img_url('2.jpg')
    for c, urls in (('grizzly', [url, server.img_url('3.jpg')]), ('black', [url])):   # the book's loop: one call per search
        df = download_images(tmp_path/'bears'/c, urls=urls, **FAST)
        assert (df.status == 'ok').all()
    black = [f for f in (tmp_path/'bears'/'black').iterdir()]
    assert len(black) == 1 and not (tmp_path/'bears'/'grizzly'/black[0].name).exists()
    shutil.move(str(black[0]), tmp_path/'bears'/'grizzly')          # the book's cleaner loop: relabel by moving the file
    assert len(list((tmp_path/'bears'/'grizzly').iterdir())) == 3
    again = download_images(tmp_path/'bears'/'grizzly', urls=[url, server.img_url('3.jpg')], **FAST)   # a rerun keeps what it has
    assert (again[again['class'] == 'grizzly'].reason == 'already downloaded').all() and len(list((tmp_path/'bears'/'grizzly').iterdir())) == 3


def test_a_read_only_destination_fails_before_any_download(server, tmp_path):
    "A destination that exists but cannot be written (a read-only mount) is refused up front, not after every URL was fetched"
    from conftest import read_only
    (tmp_path/'d').mkdir(); before = sum(server.hits.values())
    with read_only(tmp_path/'d') as ro:
        with pytest.raises(PermissionError, match='read-only'):
            download_images([server.img_url(f'{i}.jpg') for i in range(6)], ro, label='a', quarantine=tmp_path/'q', **FAST)
        assert not list(ro.iterdir())
    assert sum(server.hits.values()) == before   # nothing was fetched


def test_a_rerun_does_not_fetch_again_what_was_removed_relabelled_or_quarantined(server, tmp_path):
    "Download, then delete one file, relabel one (moved to the other class folder), quarantine one with verify: a top-up run fetches only the new URL"
    q = server.url('ok_query', 'rm') + '?x=1'   # a 20x10 PNG
    urls = {'a': [server.img_url('0.jpg'), server.img_url('1.jpg'), q, server.img_url('2.jpg')], 'b': [server.img_url('4.jpg')]}
    d = tmp_path/'d'
    df = download_images(urls, d, **FAST).set_index('url')
    assert (df.status == 'ok').all(), list(df.reason)
    (d/df.file[urls['a'][0]]).unlink()                                             # deleted (a cleaning moves it to its trash)
    moved = df.file[urls['a'][1]]; (d/moved).replace(d/'b'/Path(moved).name)        # relabelled a -> b
    verify_dataset(d, min_size=11, progress=False, n_workers=0, verbose=False)     # the 20x10 PNG: quarantined by verify
    before = dict(server.hits)
    urls['a'].append(server.img_url('5.jpg') + '?removed-test')   # a path no other test asks for
    df2 = download_images(urls, d, **FAST).set_index('url')
    assert {k: v for k, v in server.hits.items() if before.get(k) != v} == {'/img/5.jpg?removed-test': 1}   # only the new URL was fetched
    assert list(df2.status[urls['a']]) == ['skipped', 'skipped', 'skipped', 'ok', 'ok'], list(df2.reason)
    assert df2.reason[urls['a'][1]] == f"removed earlier ({moved} moved to b/{Path(moved).name}; relabelled: not fetched again, even with refetch_removed)"
    assert df2.reason[q].startswith('removed earlier (verify: too small'), df2.reason[q]
    assert '3 URLs skipped: removed earlier' in summarize_downloads(df2.reset_index())
    df3 = download_images(urls, d, **FAST).set_index('url')    # a third run still remembers
    assert list(df3.status[urls['a']]) == ['skipped', 'skipped', 'skipped', 'ok', 'ok'] and server.hits['/img/5.jpg?removed-test'] == 1
    df4 = download_images(urls, d, refetch_removed=True, **FAST).set_index('url')   # asked for: the deleted and the quarantined fetched again
    assert list(df4.status[urls['a']]) == ['ok', 'skipped', 'ok', 'ok', 'ok'] and list(df4.reason[[urls['a'][0], q]]) == ['']*2, list(df4.reason)


def test_refetch_removed_never_fetches_a_relabelled_image_into_its_old_class(server, tmp_path):
    "A URL whose file was moved to another class folder stays skipped with refetch_removed, on every rerun; the summary says which come back"
    urls = {'a': [server.img_url('0.jpg') + '?relabel', server.img_url('1.jpg') + '?relabel'], 'b': [server.img_url('4.jpg') + '?relabel']}
    d = tmp_path/'d'
    df = download_images(urls, d, **FAST).set_index('url')
    moved = df.file[urls['a'][0]]; (d/moved).replace(d/'b'/Path(moved).name)        # relabelled a -> b
    (d/df.file[urls['a'][1]]).unlink()                                             # deleted
    for _ in range(2):   # the second refetch run reads the first one's 'skipped' row
        df2 = download_images(urls, d, refetch_removed=True, **FAST).set_index('url')
        assert list(df2.status[urls['a']]) == ['skipped', 'ok'], list(df2.reason)
        assert 'relabelled: not fetched again' in df2.reason[urls['a'][0]]
        assert sorted(p.name for p in (d/'a').iterdir()) == [Path(df.file[urls['a'][1]]).name]   # no second copy of the relabelled image
    (d/'b'/Path(moved).name).unlink()   # the relabelled file deleted too: now refetch_removed brings it back
    df3 = download_images(urls, d, refetch_removed=True, **FAST).set_index('url')
    assert list(df3.status[urls['a']]) == ['ok', 'ok'], list(df3.reason)
    s = summarize_downloads(df2.reset_index())
    assert 'already there) in ' in s and 'relabelled ones stay in their new class' in s, s


def test_a_preserved_name_file_back_after_an_undo_is_ok_again(server, tmp_path):
    "preserve_filename=True: a file removed (a rerun says 'removed earlier'), then put back where the manifest said, is ok again on the next rerun"
    urls = {'a': [server.img_url('0.jpg') + '?undo', server.img_url('1.jpg') + '?undo'], 'b': [server.img_url('2.jpg') + '?undo']}
    d = tmp_path/'d'
    df = download_images(urls, d, preserve_filename=True, **FAST).set_index('url')
    fn = d/df.file[urls['a'][0]]; fn.replace(tmp_path/'trash.jpg')       # a cleaning moves it to its trash
    df2 = download_images(urls, d, preserve_filename=True, **FAST).set_index('url')
    assert df2.status[urls['a'][0]] == 'skipped', list(df2.reason)
    (tmp_path/'trash.jpg').replace(fn)                                     # the undo puts it back
    df3 = download_images(urls, d, preserve_filename=True, **FAST).set_index('url')
    assert (df3.status == 'ok').all() and df3.file[urls['a'][0]] == df.file[urls['a'][0]], list(df3.reason)


def test_refetch_removed_fetches_a_deleted_preserved_name_though_another_class_has_that_name(server, tmp_path):
    "preserve_filename=True: a/0.jpg deleted while b holds another image named 0.jpg is deleted, not relabelled: refetch_removed brings it back"
    urls = {'a': [server.img_url('0.jpg') + '?samename'], 'b': [server.img_url('4.jpg') + '?samename']}
    d = tmp_path/'d'
    df = download_images(urls, d, preserve_filename=True, **FAST).set_index('url')
    assert df.bytes[urls['a'][0]] != df.bytes[urls['b'][0]]
    (d/df.file[urls['a'][0]]).unlink()                                                   # deleted
    (d/df.file[urls['b'][0]]).replace(d/'b'/Path(df.file[urls['a'][0]]).name)            # another image that happens to have its name
    df2 = download_images(urls, d, preserve_filename=True, refetch_removed=True, **FAST).set_index('url')
    assert df2.status[urls['a'][0]] == 'ok' and (d/df.file[urls['a'][0]]).exists(), list(df2.reason)


@pytest.mark.parametrize('kw,msg', [
    (dict(per_host=0), r'per_host=0: pass a number, at least 1'), (dict(retries=-1), r'retries=-1: pass a number, at least 0'),
    (dict(timeout=0), r'timeout=0: pass a number of seconds above 0'), (dict(timeout=-2), r'timeout=-2: pass a number of seconds above 0'),
    (dict(max_pics=-1), r'max_pics=-1: pass a number, at least 1 \(images kept per class; None for no limit\)'),
    (dict(n_workers=-3), 'n_workers=-3'), (dict(idle_timeout=0), 'idle_timeout=0'), (dict(per_host='4'), "per_host='4': pass a number"),
    (dict(processes='2'), r"processes='2': pass a whole number"), (dict(processes=2.5), r"processes=2.5: pass a whole number"),
    (dict(processes=0), r"processes=0: pass a whole number"), (dict(processes=True), r"processes=True: pass a whole number"),
    (dict(max_size=-1), r"max_size=-1 \(--max-size -1\)"), (dict(max_pixels=0), r"max_pixels=0"),   # every URL failed, exit 0
    (dict(max_size=4, min_size=8), r"max_size=4 is under min_size=8"),
])
def test_numbers_out_of_range_are_refused_before_any_work(server, tmp_path, kw, msg):
    "per_host=0 used to wait for a slot for ever; the others were taken as they came. Refused before a folder is made or a URL fetched"
    import re, threading
    got, before = [], dict(server.hits)
    def run():
        try: download_images([server.img_url('0.jpg')], tmp_path/'d', label='a', progress=False, verbose=False, **kw); got.append(None)
        except Exception as e: got.append(e)
    t = threading.Thread(target=run, daemon=True); t.start(); t.join(20)
    assert got, f"download_images(..., {kw}) still running after 20 s"
    assert isinstance(got[0], ValueError) and re.search(msg, str(got[0])), got[0]
    assert not (tmp_path/'d').exists() and server.hits == before


def test_a_retry_after_longer_than_max_retry_wait_fails_the_url_at_once(tmp_path):
    "Retry-After: 3600 used to hold the URL 60 s a retry whatever the timeout; now a longer ask than max_retry_wait (default: timeout) fails it at once"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    hits = []
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            hits.append(1); self.send_response(429 if 'a' in self.path else 503); self.send_header('Retry-After', '3600' if 'a' in self.path else '100')
            self.send_header('Content-Length', '0'); self.end_headers()
    srv = ThreadingHTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    got, base = [], f'http://127.0.0.1:{srv.server_address[1]}'
    run = lambda: got.append(download_images([f'{base}/a.jpg', f'{base}/b.jpg'], tmp_path/'d', label='a', retries=2, backoff=0.05, timeout=3, progress=False, verbose=False))
    t = threading.Thread(target=run, daemon=True); t0 = time.monotonic(); t.start(); t.join(20)
    try:
        assert got, 'still waiting after 20 s'
        assert time.monotonic() - t0 < 5 and len(hits) == 2
        assert list(got[0].reason) == ['http 429 (the server asks to wait 3600s, over max_retry_wait 3s; rerun later to try again)',
                                       'http 503 (the server asks to wait 100s, over max_retry_wait 3s; rerun later to try again)']
        assert 'Reasons: http 429 1, http 503 1' in summarize_downloads(got[0])
    finally: srv.shutdown(); srv.server_close()


def test_a_utf16_url_file_is_read_and_one_without_a_byte_order_mark_is_refused_by_name(server, tmp_path):
    "Excel's and Notepad's 'Unicode text' (UTF-16 with a BOM) used to give URLs full of %00; without a BOM: an error naming the file, not garbage"
    (tmp_path/'urls').mkdir()
    text = 'url\r\n' + server.img_url('0.jpg') + '\r\n' + server.img_url('caf\xe9.jpg') + '\r\n'
    for enc in ('utf-16', 'utf-16-be', 'utf-32'):
        fn = tmp_path/('urls' if enc == 'utf-16' else '.')/f'urls_{enc}.txt'; fn.write_bytes((text if enc != 'utf-16-be' else '\ufeff' + text).encode(enc))
        assert read_urls(fn) == [server.img_url('0.jpg'), server.img_url('caf%C3%A9.jpg')], enc
    df = download_images(tmp_path/'urls', tmp_path/'d', **FAST)
    assert list(df.status) == ['ok', 'failed'] and list(df.reason) == ['', 'http 404']   # 'café.jpg' is not on the server
    (tmp_path/'bad.txt').write_bytes(text.encode('utf-16-le'))
    with pytest.raises(ValueError, match=r'bad\.txt is not a text file of URLs .*UTF-16 without a byte-order mark.*save it as UTF-8'): read_urls(tmp_path/'bad.txt')


def test_an_empty_url_file_among_others_is_warned_about(server, tmp_path):
    "urls_x.csv with no URL used to be dropped without a word; class x gets no images: said, naming the file"
    (tmp_path/'urls').mkdir()
    (tmp_path/'urls'/'urls_a.csv').write_text(server.img_url('0.jpg') + '\n'); (tmp_path/'urls'/'urls_x.csv').write_text('url\n')
    with pytest.warns(UserWarning, match=r"urls_x\.csv has no URLs, so class 'x' gets no images; put one URL a line in it"):
        df = download_images(tmp_path/'urls', tmp_path/'d', **FAST)
    assert list(df['class']) == ['a']


def test_download_processes_fetch_the_classes_in_turn(tmp_path):
    "In download processes as in threads, each host's URLs go class by class in turn (they went a whole class first), so an interrupted run has some of each"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    seen, data = [], jpeg_bytes((40, 30))
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            seen.append((self.headers['Host'].split(':')[0], self.path[1])); self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
            self.send_header('Content-Length', str(len(data))); self.end_headers(); self.wfile.write(data)
    srv = ThreadingHTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    urls = {c: [f'http://{h}:{port}/{c}{i}.jpg' for i in range(4) for h in ('127.0.0.1', 'localhost')] for c in 'ab'}
    try: download_images(urls, tmp_path/'d', processes=2, n_workers=2, progress=False, verbose=False, verify=False)
    finally: srv.shutdown(); srv.server_close()
    for h in ('127.0.0.1', 'localhost'):   # one fetch at a time per process: the server sees the order of the shard
        assert [c for host, c in seen if host == h] == list('ab'*4), seen


def test_a_ctrl_c_as_a_download_process_starts_ends_it_without_a_traceback(server, tmp_path):
    "The terminal's Ctrl-C reaches the download processes too; one landing as a process started its stdin watcher printed a traceback"
    import pickle
    from imgclean import download as dl
    from imgclean.core import MAX_PIXELS
    from imgclean.images import MIN_SIZE, WEB_FORMATS
    o = dl._options('ours', dict(max_pics=None, n_workers=1, timeout=2, total_timeout=None, idle_timeout=None, per_host=1, max_bytes=10**6,
                                 max_redirects=2, retries=0, backoff=0, verify=False, max_size=None, max_pixels=MAX_PIXELS, min_size=MIN_SIZE,
                                 formats=WEB_FORMATS, processes=None, preserve_filename=False, refetch_removed=False, max_retry_wait=None))
    rows = [dict(zip(dl.MANIFEST_COLS, ['a', server.img_url('0.jpg'), '', '', '', None, None, None, '']))]
    code = textwrap.dedent("""
        import os, signal, threading
        _start = threading.Thread.start
        def start(self):   # Ctrl-C lands just as the process starts the thread that watches its stdin
            if getattr(self._target, '__name__', '') == '_stop_on_eof': os.kill(os.getpid(), signal.SIGINT)
            return _start(self)
        threading.Thread.start = start
        from imgclean.download import _serve_shard; _serve_shard()
    """)
    p = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
    dl._send(p.stdin, pickle.dumps((str(tmp_path/'d'), {**o, 'quarantine': tmp_path/'q'}, rows, str(tmp_path/'shard.csv'))))
    msgs = []
    try:
        while True: msgs.append(pickle.loads(dl._recv(p.stdout)))
    except EOFError: pass
    code, err = p.wait(30), p.stderr.read().decode(); p.stdin.close()
    assert 'Traceback' not in err and code == 0, err
    assert msgs[-1][0] == 'done' and msgs[-1][1][0]['reason'] == 'interrupted (rerun to resume)'
    assert pd.read_csv(tmp_path/'shard.csv', keep_default_na=False).reason.tolist() == ['interrupted (rerun to resume)']
