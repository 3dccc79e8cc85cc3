"""Serving under faults (issues 13, 17): one deadline per URL fetch, URL fetches apart from uploads, SIGTERM with
fetches hanging, uploads capped while they stream, a pixel budget for decoding, our own sentences for bad images,
and a batcher that survives cancelled requests and tells /health when it is dead."""
import asyncio, re, socket, threading, time, urllib.error, urllib.request

import pytest

from _fault_helpers import FaultServer, bomb_png
from _serve_helpers import CliServer, app_client, get_json, png_bytes, post_in_chunks, solid_png, tiny_export
from imgclean.serve import FetchRefused, Predictor, decode_image, fetch_url


@pytest.mark.timeout(60)
def test_url_timeout_bounds_the_whole_fetch():
    "A server that trickles a byte every 0.5 s (or sends no headers at all) is cut off at --url-timeout, with a reason"
    with FaultServer(trickle_every=0.5, trickle_for=20) as fs, app_client(allow_private=True, url_timeout=2) as c:
        for kind in ('trickle', 'noheaders'):
            t0 = time.monotonic()
            r = c.get('/classify-url', params={'url': fs.url(kind)})
            took = time.monotonic() - t0
            assert r.status_code == 504, r.text
            assert 'within 2 s' in r.json()['error'] and '--url-timeout' in r.json()['error']
            assert took < 2 + 1.5, (kind, took)


@pytest.mark.timeout(120)
def test_hanging_url_fetches_never_starve_uploads():
    "40 URL fetches hanging on a trickle: an upload is still answered at once, and at most --max-fetches (16) fetch threads run"
    with FaultServer(trickle_every=0.5, trickle_for=8) as fs, app_client(allow_private=True, url_timeout=5) as c:
        codes = []
        def fetch(): codes.append(c.get('/classify-url', params={'url': fs.url('trickle')}).status_code)
        ts = [threading.Thread(target=fetch) for _ in range(40)]
        for t in ts: t.start()
        time.sleep(1.5)                                       # all 40 are in flight now
        t0 = time.monotonic()
        r = c.post('/classify', content=png_bytes())
        took = time.monotonic() - t0
        fetching = c.get('/health').json().get('fetching')
        for t in ts: t.join(60)
        assert r.status_code == 200 and took < 3, (r.status_code, took)
        assert fetching == 16
        assert len(codes) == 40 and set(codes) <= {503, 504}, codes   # each one answered: timed out, or no slot in time


@pytest.mark.timeout(180)
def test_sigterm_with_fetches_hanging_stops_in_seconds(free_port):
    "uvicorn under `imgclean serve`: SIGTERM while 20 fetches trickle (60 s deadline; 16 fetching, 4 waiting for a slot): all answered 503, exit at once"
    pkl, _ = tiny_export()
    with FaultServer(trickle_every=0.5, trickle_for=60) as fs, CliServer(pkl, free_port, '--allow-private', '--url-timeout', 60) as srv:
        answers = []
        def fetch():
            try: urllib.request.urlopen(f"{srv.base}/classify-url?url={fs.url('trickle')}", timeout=90); answers.append(200)
            except urllib.error.HTTPError as e: answers.append(e.code)
            except OSError as e: answers.append(type(e).__name__)
        ts = [threading.Thread(target=fetch) for _ in range(20)]
        for t in ts: t.start()
        deadline = time.monotonic() + 20
        while fs.hits.get('/f/trickle', 0) < 16 and time.monotonic() < deadline: time.sleep(0.1)
        time.sleep(0.5)
        t0 = time.monotonic()
        srv.proc.terminate()
        srv.proc.wait(60)
        took = time.monotonic() - t0
        for t in ts: t.join(30)
        assert took < 6, (took, srv.log())
        assert answers == [503] * 20, answers


def test_chunked_multipart_over_the_cap_is_refused_while_it_arrives():
    "A 64 MB multipart upload without Content-Length against a 1 MB cap: 413 after about 1 MB, the rest never read"
    with app_client(max_upload_bytes=1_000_000) as c:
        head = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
                b'Content-Type: image/png\r\n\r\n' + png_bytes())
        chunks = [head] + [b'\0' * 65536] * 1024 + [b'\r\n--XyZ--\r\n']        # 64 MB of padding
        status, body, taken = asyncio.run(post_in_chunks(c.app, chunks, 'multipart/form-data; boundary=XyZ'))
        assert status == 413 and taken < 1_000_000 + 2*65536 + len(head), (status, taken)   # answered while the client was still sending
        assert '1,000,000' in body['error'] and '--max-upload-bytes' in body['error'], body
        status, body, taken = asyncio.run(post_in_chunks(c.app, [b'\0' * 65536] * 1024, 'image/png'))   # a raw body likewise
        assert status == 413 and taken < 1_000_000 + 2*65536


@pytest.mark.timeout(120)
def test_decoding_waits_for_room_in_the_pixel_budget():
    "12 uploads of 3-megapixel PNGs (a few KB each) against a 6-megapixel budget: all answered, never over 6 MP at once"
    big = solid_png(2000, 1500)
    assert len(big) < 50_000
    with app_client(max_pixels=4_000_000, max_decode_pixels=6_000_000) as c:
        codes = []
        def post(): codes.append(c.post('/classify', content=big).status_code)
        ts = [threading.Thread(target=post) for _ in range(12)]
        for t in ts: t.start()
        for t in ts: t.join(100)
        h = c.get('/health').json()
        assert codes == [200] * 12
        assert 3_000_000 <= h['decoding_pixels_peak'] <= 6_000_000 and h['decoding_pixels'] == 0, h


OURS = re.compile(r"cannot decode the image: (it is truncated|its [A-Z]+ (data|header) is damaged)")

def test_bad_images_are_refused_in_our_words():
    "Damaged and truncated images get our sentence (never Pillow's text); a bomb names --max-pixels and how to raise it"
    png, jpg = png_bytes(size=64), png_bytes(size=64, fmt='JPEG')
    for data in (png[:40] + bytes(b ^ 0x55 for b in png[40:]), png[:len(png)//2], jpg[:len(jpg)//2], png[:33] + b'\0' * 64):
        with pytest.raises(FetchRefused) as e: decode_image(data)
        assert e.value.status == 422 and OURS.fullmatch(e.value.reason), e.value.reason
    with pytest.raises(FetchRefused) as e: decode_image(bomb_png(), max_pixels=40_000_000)
    assert e.value.status == 413 and '--max-pixels limit of 40,000,000' in e.value.reason and 'larger --max-pixels' in e.value.reason
    with app_client(max_pixels=1000) as c:
        r = c.post('/classify', content=png)
        assert r.status_code == 413 and '--max-pixels limit of 1,000' in r.json()['error']


def test_a_cancelled_request_does_not_stop_the_batcher():
    "A request cancelled while queued is skipped; the batch it was in and every later request are still served"
    import warnings
    pkl, _ = tiny_export()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pred = Predictor(pkl, max_batch=4, max_wait_ms=300)
    try:
        x = pred.preprocess(decode_image(png_bytes()))
        gone = pred.submit(x); gone.cancel()
        same_batch = pred.submit(x)
        assert same_batch.result(timeout=30).shape == (3,)
        assert pred.submit(x).result(timeout=30).shape == (3,)
        assert gone.cancelled() and pred.alive
    finally: pred.close()


@pytest.mark.timeout(120)
def test_request_timeout_then_served_again(monkeypatch):
    "A stuck forward pass: requests get 503 with the reason after --request-timeout, /health says stuck; then all is well again"
    with app_client(request_timeout=1) as c:
        pred = c.app.state.predictor
        gate, real = threading.Event(), pred.predict_batch
        monkeypatch.setattr(pred, 'predict_batch', lambda xs: (gate.wait(30), real(xs))[1])
        out = []
        ts = [threading.Thread(target=lambda: out.append(c.post('/classify', content=png_bytes()))) for _ in range(2)]
        t0 = time.monotonic()
        for t in ts: t.start(); time.sleep(0.3)            # the first one holds the worker, the second one waits in the queue
        for t in ts: t.join(30)
        took = time.monotonic() - t0
        assert [r.status_code for r in out] == [503, 503] and took < 4, ([r.text for r in out], took)
        assert all('--request-timeout' in r.json()['error'] for r in out)
        h = c.get('/health')
        assert h.status_code == 503 and h.json()['status'] == 'stuck'
        gate.set()
        r = c.post('/classify', content=png_bytes())
        assert r.status_code == 200, r.text
        assert c.get('/health').json()['status'] == 'ok'


@pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning')
def test_health_is_503_when_the_worker_is_dead(monkeypatch):
    "The batch thread killed (an exception it cannot catch): /health answers 503 saying so, and so do new requests"
    with app_client() as c:
        assert c.get('/health').status_code == 200
        pred = c.app.state.predictor
        def die(*a, **kw): raise SystemExit('killed')
        monkeypatch.setattr(pred.q, 'get', die)
        pred.thread.join(5)
        h = c.get('/health')
        assert h.status_code == 503 and h.json()['status'] == 'stopped' and 'restart' in h.json()['error']
        r = c.post('/classify', content=png_bytes())
        assert r.status_code == 503 and 'worker has stopped' in r.json()['error']


def test_refusals_name_no_resolved_address_nor_socket_error():
    "What was refused and why, in words: no resolved address, no errno text"
    with pytest.raises(FetchRefused) as e: fetch_url('http://localhost:9/x.png')
    assert e.value.status == 403 and 'localhost' in e.value.reason and '--allow-private' in e.value.reason
    assert '127.0.0.1' not in e.value.reason and '::1' not in e.value.reason
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]   # closed again: nobody listens
    with pytest.raises(FetchRefused) as e: fetch_url(f'http://127.0.0.1:{port}/x.png', allow_private=True)
    assert e.value.status == 502 and e.value.reason == 'could not fetch the URL: connection refused'


@pytest.mark.timeout(120)
def test_an_upload_that_trickles_is_cut_off_at_the_request_timeout(free_port):
    "A client sending its body a byte every 0.3 s gets 408 at --request-timeout, not a connection held open for ever"
    pkl, _ = tiny_export()
    with CliServer(pkl, free_port, '--request-timeout', 2) as srv:
        s = socket.create_connection(('127.0.0.1', free_port), timeout=15)
        try:
            s.sendall(b'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n')
            t0, got = time.monotonic(), b''
            s.setblocking(False)
            while time.monotonic() - t0 < 15 and b'\r\n\r\n' not in got:
                try: s.send(b'\0')
                except OSError: break   # closed by the server
                time.sleep(0.3)
                try: got += s.recv(4096)
                except BlockingIOError: pass
            took = time.monotonic() - t0
        finally: s.close()
        assert got.startswith(b'HTTP/1.1 408') and b'--request-timeout' in got, (got[:300], srv.log())
        assert took < 8, took
