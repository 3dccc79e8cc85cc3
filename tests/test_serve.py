"The serving app through an ASGI test client: every endpoint, every refusal, SSRF checks and batching."
import ipaddress, queue, threading, time, warnings

import pytest
from starlette.testclient import TestClient

from _fault_helpers import bomb_png
from _serve_helpers import ImageSite, png_bytes, tiny_export
from imgclean.serve import FetchRefused, Predictor, decode_image, fetch_url, is_public_address, make_app


def app_client(**kw):
    pkl, _ = tiny_export()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return TestClient(make_app(pkl, **kw))


@pytest.fixture(scope='module')
def client():
    with app_client(max_upload_bytes=100_000) as c: yield c


@pytest.fixture
def site():
    with ImageSite() as s: yield s


@pytest.mark.parametrize('addr,public', [
    ('8.8.8.8', True), ('1.1.1.1', True), ('2606:4700::1111', True), ('2a00:1450:4001::200e', True),
    ('127.0.0.1', False), ('127.1.2.3', False), ('10.0.0.1', False), ('172.16.0.1', False), ('172.31.255.255', False),
    ('192.168.0.1', False), ('169.254.169.254', False), ('0.0.0.0', False), ('100.64.0.1', False), ('224.0.0.1', False),
    ('240.0.0.1', False), ('255.255.255.255', False), ('192.0.2.1', False), ('198.18.0.1', False),
    ('::1', False), ('::', False), ('fc00::1', False), ('fd12:3456::1', False), ('fe80::1', False), ('ff02::1', False),
    ('::ffff:127.0.0.1', False), ('::ffff:10.0.0.1', False), ('::ffff:8.8.8.8', True), ('2002:7f00:1::', False),
    ('2002:a00:1::', False), ('2002:808:808::', True), ('64:ff9b::7f00:1', False), ('64:ff9b::808:808', True),
    ('2001:0:4136:e378:8000:63bf:80ff:fffe', False),   # Teredo whose client address is 127.0.0.1
    ('::127.0.0.1', False), ('2001:db8::1', False), ('fec0::1', False), ('fec0:1::1', False),   # site-local
])
def test_address_policy(addr, public):
    assert is_public_address(addr) is public


@pytest.mark.parametrize('url,status', [
    ('http://127.0.0.1/x.png', 403), ('http://localhost/x.png', 403), ('http://[::1]/x.png', 403),
    ('http://2130706433/x.png', 403), ('http://0177.0.0.1/x.png', 403), ('http://0x7f.0.0.1/x.png', 403),
    ('http://127.1/x.png', 403), ('http://[::ffff:127.0.0.1]/x.png', 403), ('http://169.254.169.254/latest/meta-data', 403),
    ('http://10.0.0.1:8080/x.png', 403), ('file:///etc/passwd', 400), ('ftp://example.com/x.png', 400),
    ('javascript:alert(1)', 400), ('data:image/png;base64,iVBORw0KGgo=', 400), ('http:///x.png', 400),
    ('http://127.0.0.1:99999/x.png', 400), ('not a url', 400),
])
def test_urls_refused_before_any_connection(url, status):
    with pytest.raises(FetchRefused) as e: fetch_url(url)
    assert e.value.status == status, e.value.reason


def test_loopback_server_refused_by_default_allowed_with_allow_private(site):
    with pytest.raises(FetchRefused) as e: fetch_url(f'{site.url}/img.png')
    assert e.value.status == 403 and '--allow-private' in e.value.reason
    assert site.hits == 0                                   # refused before connecting
    assert fetch_url(f'{site.url}/img.png', allow_private=True) == site.png


def test_every_redirect_is_checked(site):
    trust_loopback = lambda ip: ip == ipaddress.ip_address('127.0.0.1')   # an operator policy trusting this one host
    assert fetch_url(f'{site.url}/to/{site.url}/img.png', check=trust_loopback) == site.png
    for target in ('http://10.0.0.1/x.png', 'http://169.254.169.254/', 'http://[::1]/x.png', 'http://127.0.0.2/x.png'):
        with pytest.raises(FetchRefused) as e: fetch_url(f'{site.url}/to/{target}', check=trust_loopback)
        assert e.value.status == 403 and e.value.reason.startswith('refused: a redirect leads to'), e.value.reason
    with pytest.raises(FetchRefused, match='too many redirects'): fetch_url(f'{site.url}/loop', allow_private=True)


def test_fetch_limits(site):
    for path in ('/big', '/big-nolength'):
        with pytest.raises(FetchRefused) as e: fetch_url(f'{site.url}{path}', allow_private=True, max_bytes=50_000)
        assert e.value.status == 413, path
    with pytest.raises(FetchRefused) as e: fetch_url(f'{site.url}/page', allow_private=True)
    assert e.value.status == 415
    with pytest.raises(FetchRefused) as e: fetch_url(f'{site.url}/missing', allow_private=True)
    assert e.value.status == 502 and '404' in e.value.reason


def test_fetch_times_out_on_a_stalled_server():
    import socket
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)       # accepts, never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(FetchRefused) as e: fetch_url(f'http://127.0.0.1:{srv.getsockname()[1]}/x.png', allow_private=True, timeout=0.5)
        assert e.value.status == 504 and time.monotonic() - t0 < 5
    finally: srv.close()


def test_classify_upload_and_raw_body(client):
    r = client.post('/classify', files={'file': ('c.png', png_bytes(), 'image/png')})
    assert r.status_code == 200, r.text
    preds = r.json()['predictions']
    assert sorted(c for c, _ in preds) == ['circle', 'square', 'triangle']
    probs = [p for _, p in preds]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    r2 = client.post('/classify', content=png_bytes(), headers={'content-type': 'image/png'})
    assert r2.status_code == 200 and r2.json() == r.json()
    r3 = client.post('/classify', content=png_bytes(fmt='JPEG'))    # any content type: the bytes decide
    assert r3.status_code == 200


def test_predictions_match_learn_predict():
    pkl, learn = tiny_export()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pred = Predictor(pkl, max_batch=8, max_wait_ms=300)
    try:
        from imgclean.datasets import draw_shape
        imgs = [draw_shape(c, 40 + 4*i, seed=i) for i, c in enumerate(['circle', 'square', 'triangle'] * 2)]
        futs = [pred.submit(pred.preprocess(im)) for im in imgs]
        got = [f.result(timeout=60) for f in futs]
        assert pred.batches == 1 and pred.items == 6          # one forward pass for the six requests
        for im, p in zip(imgs, got):
            ref = learn.predict(im)[2]
            assert float((p - ref).abs().max()) < 1e-4
    finally: pred.close()


@pytest.mark.parametrize('kind,status,words', [
    ('empty', 400, 'empty body'), ('wrong_field', 400, "field named 'file'"), ('text_field', 400, "field named 'file'"),
    ('not_image', 415, 'not an image'), ('html', 415, 'not an image'), ('truncated', 422, 'cannot decode'),
    ('bomb', 413, 'pixels'), ('too_big', 413, 'limit'),
])
def test_bad_uploads_are_4xx_with_a_reason(client, kind, status, words):
    png = png_bytes(size=64)
    if kind == 'empty': r = client.post('/classify', content=b'')
    elif kind == 'wrong_field': r = client.post('/classify', files={'image': ('c.png', png, 'image/png')})
    elif kind == 'text_field': r = client.post('/classify', data={'file': 'hello'}, files={'other': ('x', b'x')})
    elif kind == 'not_image': r = client.post('/classify', files={'file': ('a.pdf', b'%PDF-1.4 ...', 'application/pdf')})
    elif kind == 'html': r = client.post('/classify', content=b'<!doctype html><html></html>')
    elif kind == 'truncated': r = client.post('/classify', content=png_bytes(size=64, fmt='JPEG')[:600])
    elif kind == 'bomb': r = client.post('/classify', content=bomb_png())
    else: r = client.post('/classify', content=png + b'\0' * 200_000)
    assert r.status_code == status, r.text
    assert words in r.json()['error']


def test_classify_url_endpoint(site):
    with app_client() as c:
        r = c.get('/classify-url', params={'url': f'{site.url}/img.png'})
        assert r.status_code == 403 and 'allow-private' in r.json()['error']
        assert c.get('/classify-url').status_code == 400
        assert c.get('/classify-url', params={'url': 'file:///etc/passwd'}).status_code == 400
    with app_client(allow_private=True) as c:
        r = c.get('/classify-url', params={'url': f'{site.url}/img.png'})
        assert r.status_code == 200, r.text
        assert len(r.json()['predictions']) == 3
        assert c.get('/classify-url', params={'url': f'{site.url}/page'}).status_code == 415
        assert c.get('/classify-url', params={'url': f'{site.url}/loop'}).status_code == 400


def test_info_endpoints_and_json_errors(client):
    assert client.get('/classes').json() == {'classes': ['circle', 'square', 'triangle']}
    h = client.get('/health').json()
    assert h['status'] == 'ok' and h['classes'] == 3 and h['max_batch'] == 16
    page = client.get('/')
    assert page.status_code == 200 and 'id="file"' in page.text and 'classify-url' in page.text and '<script src' not in page.text
    r = client.get('/nope'); assert r.status_code == 404 and 'error' in r.json()
    r = client.get('/classify'); assert r.status_code == 405 and 'error' in r.json()


def test_overload_is_503_with_retry_after(client, monkeypatch):
    pred = client.app.state.predictor
    def full(x): raise queue.Full
    monkeypatch.setattr(pred, 'submit', full)
    r = client.post('/classify', content=png_bytes())
    assert r.status_code == 503 and r.headers['retry-after'] == '1'


def test_concurrent_requests_share_batches():
    with app_client(max_batch=8, max_wait_ms=200) as c:
        pred = c.app.state.predictor
        before = pred.batches
        codes = []
        def one(): codes.append(c.post('/classify', content=png_bytes(seed=len(codes))).status_code)
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts: t.start()
        for t in ts: t.join(60)
        assert codes == [200] * 8
        assert pred.batches - before < 8                       # some requests were answered by the same forward pass


def test_decode_image_fixes_orientation_and_mode():
    import io
    from PIL import Image
    im = Image.new('RGBA', (40, 20), (255, 0, 0, 128)); exif = im.getexif(); exif[0x0112] = 6   # rotate 90
    buf = io.BytesIO(); im.save(buf, 'PNG', exif=exif)
    out = decode_image(buf.getvalue())
    assert out.mode == 'RGB' and out.size == (20, 40)


@pytest.mark.timeout(150)
def test_cli_serve_flags_reach_the_app(free_port):
    "`imgclean serve` under uvicorn: --top and --max-upload-bytes change what the server answers"
    import json, urllib.error, urllib.request
    from _serve_helpers import CliServer, get_json
    pkl, _ = tiny_export()
    small = png_bytes('square', size=48, seed=3)
    assert len(small) < 6000
    with CliServer(pkl, free_port, '--top', 1, '--max-upload-bytes', 6000) as srv:
        assert get_json(srv.base + '/classes')['classes'] == ['circle', 'square', 'triangle']
        req = urllib.request.Request(srv.base + '/classify', data=small, method='POST')
        with urllib.request.urlopen(req, timeout=30) as r: preds = json.loads(r.read())['predictions']
        assert len(preds) == 1 and preds[0][0] in ('circle', 'square', 'triangle')
        big = urllib.request.Request(srv.base + '/classify', data=small + b'\0' * 6000, method='POST')
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(big, timeout=30)
        assert e.value.code == 413 and '6,000' in json.loads(e.value.read())['error']


def test_greyscale_learner_is_served():
    "A learner on `ImageBlock(cls=PILImageBW)` (one input channel) answers 200 with `learn.predict`'s probabilities, never 500"
    from fastai.vision.core import PILImageBW
    from _export_helpers import tiny_bw_learner
    learn, root = tiny_bw_learner()
    fn = next(root.rglob('*.png'))
    with learn.no_bar(): ref = dict(zip(map(str, learn.dls.vocab), learn.predict(PILImageBW.create(fn))[2].tolist()))
    with TestClient(make_app(learn)) as c:
        r = c.post('/classify', content=fn.read_bytes())
        assert r.status_code == 200, r.text
        assert max(abs(p - ref[k]) for k, p in r.json()['predictions']) < 1e-4


def test_a_model_that_cannot_classify_is_refused_at_start():
    "A learner whose forward pass fails is refused by `make_app` with the reason, instead of answering 500 to every request"
    import torch
    from _export_helpers import tiny_learner
    learn = tiny_learner()[0]
    class Broken(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Linear(1, 1)
        def forward(self, x): raise RuntimeError('expected input to have 1 channels, but got 3 channels instead')
    model = learn.model
    learn.model = Broken()
    try:
        with pytest.raises(ValueError, match='fails on a test image.*1 channels'): make_app(learn)
    finally: learn.model = model


def test_every_prediction_path_decodes_alike(client, tmp_path):
    "An EXIF-rotated JPEG, a half-transparent PNG and a 16-bit PNG get the same probabilities from /classify, predict_image and predict_files"
    import numpy as np
    from PIL import Image
    from imgclean.datasets import draw_shape
    from imgclean.export import predict_files, predict_image
    _, learn = tiny_export()
    tall = draw_shape('triangle', 64, seed=7).resize((64, 32)); ex = tall.getexif(); ex[0x0112] = 6
    tall.save(tmp_path/'exif6.jpg', exif=ex)
    a = np.asarray(draw_shape('square', 64, seed=3).convert('RGBA')).copy(); a[:, :32] = 0
    Image.fromarray(a).save(tmp_path/'rgba_half.png')
    Image.fromarray(np.asarray(draw_shape('circle', 64, seed=5).convert('L')).astype(np.uint16) * 257).save(tmp_path/'gray16.png')
    df = predict_files(learn, tmp_path, probs=True, progress=False).set_index('file_name')
    for f in sorted(tmp_path.iterdir()):
        served = dict(client.post('/classify', content=f.read_bytes()).json()['predictions'])
        for name, got in (('predict_image', dict(predict_image(learn, f))), ('predict_files', df.loc[str(f), list(served)].to_dict())):
            assert max(abs(got[c] - served[c]) for c in served) < 1e-4, (f.name, name, got, served)


def test_non_ascii_and_space_urls_are_percent_encoded():
    "A URL with non-ASCII or a space, and a redirect whose Location holds raw UTF-8 or Latin-1, are fetched percent-encoded"
    import http.server
    png = png_bytes()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            to = {'/utf8': '/b\u00e4r.png'.encode().decode('latin-1'), '/latin1': '/b\u00e4r.png'}.get(self.path)   # raw bytes on the wire
            if to: self.send_response(302); self.send_header('Location', to); self.send_header('Content-Length', '0'); self.end_headers(); return
            ok = self.path in ('/b%C3%A4r.png', '/a%20b.png')
            self.send_response(200 if ok else 404); self.send_header('Content-Type', 'image/png' if ok else 'text/plain')
            body = png if ok else self.path.encode('latin-1', 'replace')
            self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H); srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{srv.server_address[1]}'
    try:
        for path in ('/b\u00e4r.png', '/a b.png', '/utf8', '/latin1'):
            assert fetch_url(base + path, allow_private=True, timeout=5) == png, path
    finally: srv.shutdown(); srv.server_close()


def test_cli_serve_refuses_a_bad_port_and_a_folder_at_once(tmp_path, capsys):
    "`imgclean serve --port 99999` and `imgclean serve FOLDER` stop with one line saying what to pass, before loading anything"
    from imgclean.cli import main
    pkl = tmp_path/'export.pkl'; pkl.write_bytes(b'never loaded')
    for argv, words in ((['serve', str(pkl), '--port', '99999'], 'port 99999 is out of range: pass a port from 0 to 65535'),
                        (['serve', str(tmp_path)], 'is a folder; pass the export.pkl file')):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert words in err and 'loading' not in err, err


def test_cli_serve_says_a_taken_port_before_loading(tmp_path, capsys, free_port):
    "A port another server holds is said at once, in one line, before the model is loaded"
    import socket
    from imgclean.cli import main
    pkl = tmp_path/'export.pkl'; pkl.write_bytes(b'never loaded')
    with socket.socket() as other:
        other.bind(('127.0.0.1', free_port)); other.listen()
        with pytest.raises(SystemExit) as e: main(['serve', str(pkl), '--port', str(free_port)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f'cannot listen on 127.0.0.1:{free_port}' in err and 'loading' not in err, err


def test_serve_takes_a_learner_too(monkeypatch):
    "`serve(learn)` as `make_app(learn)`: no export.pkl needed in a notebook"
    from _export_helpers import tiny_learner
    from imgclean import serve as S
    learn, _, _ = tiny_learner()
    ran = []
    monkeypatch.setattr(S, '_uvicorn', lambda app, host, port: type('U', (), dict(run=lambda self: ran.append(app.state.predictor.vocab)))())
    S.serve(learn, port=0)
    assert ran == [list(map(str, learn.dls.vocab))]


def test_deep_images_take_more_of_the_decode_budget():
    "A 16-bit greyscale upload is charged 8 RGB pixels a pixel (its float64 scaling peaks at ~28 bytes a pixel), an RGB one 1"
    import io as _io
    import numpy as np
    from PIL import Image
    buf = _io.BytesIO(); Image.fromarray(np.full((40, 50), 30000, np.uint16)).save(buf, 'PNG')
    with app_client() as c:
        assert c.post('/classify', content=png_bytes(size=48)).status_code == 200
        assert c.get('/health').json()['decoding_pixels_peak'] == 48*48
        assert c.post('/classify', content=buf.getvalue()).status_code == 200
        assert c.get('/health').json()['decoding_pixels_peak'] == 40*50*8
