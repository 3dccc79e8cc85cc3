"""Downloads on a local Ray cluster: the same manifest and files as the local engine, per-host limits across tasks, max_pics
across shards, a killed run resumed. (`pip install imgclean[ray]`; `make test` installs it, so nothing here is skipped in CI.)"""
import os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fault_helpers import jpeg_bytes  # noqa: E402

ray = pytest.importorskip('ray', reason="the ray extra is not installed (pip install 'imgclean[ray]')")
from imgclean.download import download_images  # noqa: E402

HOSTS = ('127.0.0.1', '127.0.0.2', '127.0.0.3')


def shape_jpeg(n):
    "A distinct 32 px JPEG for each `n`"
    import io
    from imgclean.datasets import draw_shape
    b = io.BytesIO(); draw_shape(('circle', 'square', 'star')[n % 3], 32, seed=n).save(b, 'JPEG', quality=90); return b.getvalue()


class Site:
    "One loopback server per host: /i/<n>.jpg (distinct images, `latency` s each), /404, /html, /dup (the same bytes); counts the most requests in flight per host"
    def __init__(self, latency=0.05):
        self.latency, self.lock, self.now, self.peak, self.servers, self.killed, self.served = latency, threading.Lock(), {}, {}, [], [], 0
        site = self
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                host = self.server.server_address[0]
                with site.lock: site.now[host] = site.now.get(host, 0) + 1; site.peak[host] = max(site.peak.get(host, 0), site.now[host]); site.served += 1
                try: time.sleep(site.latency)   # the request counts while it waits here: after it, the answer can reach the client
                finally:                          # before this thread runs again, and its next request would count twice
                    with site.lock: site.now[host] -= 1
                if self.path.startswith('/i/'): body, ct, code = shape_jpeg(int(self.path[3:].split('.')[0])), 'image/jpeg', 200
                elif self.path == '/dup': body, ct, code = jpeg_bytes((40, 30), (1, 2, 3)), 'image/jpeg', 200
                elif self.path == '/html': body, ct, code = b'<!doctype html><p>moved', 'text/html', 200
                elif self.path == '/kill-client': site.kill_client(self.client_address); return
                else: body, ct, code = b'nope', 'text/plain', 404
                self.send_response(code); self.send_header('Content-Type', ct); self.send_header('Content-Length', str(len(body)))
                self.end_headers(); self.wfile.write(body)
        for h in HOSTS:
            srv = ThreadingHTTPServer((h, 0), H); srv.daemon_threads = True
            self.servers.append(srv); threading.Thread(target=srv.serve_forever, daemon=True).start()

    def kill_client(self, addr):
        "SIGKILL the process on this machine whose socket is `addr` (a Ray worker running a download task)"
        import psutil
        for c in psutil.net_connections('tcp'):
            if c.laddr and (c.laddr.ip, c.laddr.port) == tuple(addr[:2]) and c.pid: self.killed.append(c.pid); os.kill(c.pid, signal.SIGKILL)

    def url(self, i, path): s = self.servers[i % len(self.servers)]; return f'http://{s.server_address[0]}:{s.server_address[1]}{path}'
    def lists(self, n=30):
        "{class: urls}: distinct images over the hosts, a 404 and an HTML page per class, and one image behind two URLs"
        out = {c: [self.url(i, f'/i/{k*100 + i}.jpg') for i in range(n)] + [self.url(k, '/404'), self.url(k + 1, '/html')] for k, c in enumerate(('cat', 'dog'))}
        out['cat'] += [self.url(0, '/dup'), self.url(1, '/dup')]
        return out
    def close(self):
        for s in self.servers: s.shutdown(); s.server_close()


@pytest.fixture(scope='module')
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def site():
    s = Site(); yield s; s.close()


KW = dict(progress=False, verbose=False, retries=0, timeout=5)


def files_of(root):
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in Path(root).glob('[!._]*/*') if f.is_file()}


def test_ray_gives_the_local_manifest_and_files(cluster, site, tmp_path):
    lists = site.lists()
    here = download_images(lists, tmp_path/'here', **KW)
    there = download_images(lists, tmp_path/'there', engine='ray', **KW)
    key = ['class', 'url', 'status', 'file', 'bytes', 'width', 'height', 'hash']
    pd.testing.assert_frame_equal(here[key].sort_values('url', ignore_index=True), there[key].sort_values('url', ignore_index=True))
    assert (there.reason.str.startswith('duplicate image')).sum() == 1 and (there.status == 'ok').sum() == 61
    assert files_of(tmp_path/'here') == files_of(tmp_path/'there')
    assert not (tmp_path/'there'/'.imgclean_shards').exists()   # merged into manifest.csv, then removed
    again = download_images(lists, tmp_path/'there', engine='ray', **KW)
    assert (again.reason == 'already downloaded').sum() == 61


def test_per_host_limit_and_max_pics_hold_across_tasks(cluster, site, tmp_path):
    lists = site.lists(40)
    df = download_images(lists, tmp_path/'d', engine='ray', per_host=2, n_workers=64, max_pics=25, **KW)
    assert max(site.peak.values()) <= 2, site.peak   # one task per host: the limit holds cluster-wide
    assert df[df.status == 'ok'].groupby('class').size().to_dict() == {'cat': 25, 'dog': 25}
    assert {c: len(list((tmp_path/'d'/c).iterdir())) for c in ('cat', 'dog')} == {'cat': 25, 'dog': 25}
    assert df.reason.str.startswith('max_pics').sum() > 0


RUN = """import sys
from imgclean.download import download_images
download_images({lists!r}, sys.argv[1], engine='ray', progress=False, verbose=False, retries=0, n_workers=2, per_host=1)
"""


def kill_tree(p):
    "SIGKILL `p`, its process group and every process it started, and wait until they are gone"
    import psutil
    procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    os.killpg(p.pid, signal.SIGKILL)
    for o in procs:
        try: o.kill()
        except psutil.NoSuchProcess: pass
    p.wait(); psutil.wait_procs(procs, timeout=30)


def test_a_killed_cluster_run_resumes(site, tmp_path):
    site.latency = 0.3
    lists = site.lists(24); dest = tmp_path/'d'
    log = tmp_path/'run.log'
    with open(log, 'wb') as err:
        p = subprocess.Popen([sys.executable, '-c', RUN.format(lists=lists), str(dest)], start_new_session=True, stderr=err)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None and len(list(dest.glob('[!._]*/*'))) < 6: time.sleep(0.5)
    ended = p.poll()   # before the kill: a run that died by itself (e.g. Ray failed to start) says why
    kill_tree(p)   # the driver and the cluster it started (Ray's own processes are not all in its process group)
    got = len(list(dest.glob('[!._]*/*')))
    assert 6 <= got < 49, (got, ended, log.read_text()[-1500:])   # killed half-way
    site.latency = 0.0
    df = download_images(lists, dest, engine='ray', **KW)
    assert (df.reason == 'already downloaded').sum() >= 6 and (df.status == 'ok').sum() == 49
    assert len(list(dest.glob('[!._]*/*'))) == 49 and df.url.is_unique and len(df) == sum(len(v) for v in lists.values())


def test_ray_to_an_fsspec_destination(cluster, site, tmp_path):
    "engine='ray' to file://: each task uploads its shard's files, the driver the manifest; the local engine's files; memory:// refused"
    import fsspec
    lists = site.lists(10)
    here = download_images(lists, tmp_path/'here', **KW)
    url = f'file://{tmp_path}/there'
    there = download_images(lists, url, engine='ray', **KW)
    key = ['class', 'url', 'status', 'file', 'bytes', 'width', 'height', 'hash']
    pd.testing.assert_frame_equal(here[key].sort_values('url', ignore_index=True), there[key].sort_values('url', ignore_index=True))
    assert files_of(tmp_path/'there') == files_of(tmp_path/'here') and len(files_of(tmp_path/'here')) == 21
    assert not (tmp_path/'there'/'.imgclean_shards').exists() and (tmp_path/'there'/'manifest.csv').is_file()
    again = download_images(lists, url, engine='ray', **KW)
    assert (again.reason == 'already downloaded').sum() == 21
    with pytest.raises(ValueError, match="memory, which Ray's workers cannot reach"): download_images(lists, 'memory://x/y', engine='ray', **KW)
    assert not fsspec.filesystem('memory').exists('/x/y')   # refused before anything was written


def test_an_address_with_no_cluster_is_a_clear_error(monkeypatch):
    "address='auto' with no Ray cluster running (Ray raises ConnectionError): one sentence saying how to start one"
    from imgclean.download import _ray
    def no_cluster(**kw): raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to")
    monkeypatch.setattr(ray, 'is_initialized', lambda: False)   # whatever cluster earlier tests left: this is about the message
    monkeypatch.setattr(ray, 'init', no_cluster)
    with pytest.raises(ValueError, match="cannot reach a Ray cluster at address='auto'.*ray start --head"): _ray('auto')


def test_a_dead_address_is_a_clear_error_at_once(monkeypatch):
    "ray.init(address='127.0.0.1:1') retried for good (9 minutes seen, no error); an address nothing listens on is said at once"
    import socket, time
    from imgclean.download import _ray
    calls = []
    monkeypatch.setattr(ray, 'is_initialized', lambda: False)
    monkeypatch.setattr(ray, 'init', lambda **kw: calls.append(kw) or time.sleep(60))   # what a dead address does
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()   # a port nothing listens on
    for addr in (f'127.0.0.1:{port}', f'ray://127.0.0.1:{port}'):
        with pytest.raises(ValueError, match=f"cannot reach a Ray cluster at address='{addr}'.*ray start --head"): _ray(addr)
    assert calls == []


def test_a_ray_setup_error_leaves_the_manifest_as_it_was(site, tmp_path, monkeypatch):
    "Ray missing or no cluster: every row was rewritten 'interrupted (rerun to resume)', losing the earlier run's reasons (404, ...)"
    urls = {'a': [site.url(0, '/img/0.png'), site.url(0, '/missing.png')]}
    download_images(urls, tmp_path/'d', **KW)
    before = (tmp_path/'d'/'manifest.csv').read_bytes()
    def no_cluster(**kw): raise ConnectionError("Could not find any running Ray instance")
    monkeypatch.setattr(ray, 'is_initialized', lambda: False); monkeypatch.setattr(ray, 'init', no_cluster)
    with pytest.raises(ValueError, match='cannot reach a Ray cluster'):
        download_images(urls, tmp_path/'d', engine='ray', address='auto', **KW)
    assert (tmp_path/'d'/'manifest.csv').read_bytes() == before
    with pytest.raises(ValueError, match='cannot reach a Ray cluster'):
        download_images(urls, tmp_path/'fresh', engine='ray', address='auto', **KW)
    assert not (tmp_path/'fresh'/'manifest.csv').exists()


def test_the_progress_bar_moves_per_url_not_per_shard(cluster, site, tmp_path, monkeypatch):
    "The bar over URLs moved only when a whole shard task ended (4 steps for 4 shards); the tasks now tell a `_Tally` actor as they go"
    import imgclean.download as dl
    seen = []
    class Bar:
        def update(self, n): seen.append(n)
    monkeypatch.setattr(dl, '_started_bar', lambda n, progress: Bar() if progress else None)
    site.latency = 0.3
    lists = site.lists(30)
    download_images(lists, tmp_path/'d', engine='ray', per_host=1, **{**KW, 'progress': True})
    n = sum(len(v) for v in lists.values())
    assert seen == sorted(seen) and seen[-1] == n, seen   # never backwards, ends at every URL
    steps = sorted(set(seen) - {0, n})
    assert len(steps) >= 5, steps   # 66 URLs over 3 hosts (3 shards), one fetch a host at a time, 0.3 s each: ~7 s, told every 0.25 s


def test_ctrl_c_cancels_the_tasks_and_keeps_what_they_did(cluster, site, tmp_path):
    "Ctrl-C in a notebook (the kernel, and so the cluster, lives on): the tasks ran on, writing files after the manifest was written, which said 'interrupted' for every URL of an unfinished shard, done or not"
    import _thread
    site.latency = 0.3
    lists = site.lists(24); dest = tmp_path/'d'
    def interrupt():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(dest.glob('[!._]*/*'))) < 6: time.sleep(0.1)
        _thread.interrupt_main()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)   # a process started in the background ignores SIGINT: interrupt_main would do nothing
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            download_images(lists, dest, engine='ray', n_workers=3, per_host=1, **KW)
    finally: signal.signal(signal.SIGINT, old)
    served = site.served; time.sleep(2)
    assert site.served == served, (served, site.served)   # no task fetches once the call has returned
    m = pd.read_csv(dest/'manifest.csv', keep_default_na=False)
    on_disk = {f.relative_to(dest).as_posix() for f in dest.glob('[!._]*/*')}
    ok = set(m.loc[m.status == 'ok', 'file'])
    assert ok == on_disk and len(ok) >= 6, (sorted(ok ^ on_disk), len(ok))   # every file kept is named, as done
    assert m.reason.str.startswith('interrupted').sum() > 0 and len(m) == sum(len(v) for v in lists.values())
    assert not (dest/'.imgclean_shards').exists()
    site.latency = 0.0
    df = download_images(lists, dest, engine='ray', **KW)
    assert (df.reason == 'already downloaded').sum() == len(ok) and (df.status == 'ok').sum() == 49


def test_a_task_whose_worker_dies_leaves_its_rows_interrupted_and_the_run_goes_on(cluster, site, tmp_path):
    "A shard task's worker killed (OOM killer, a node lost): the whole download raised WorkerCrashedError, with every other shard's rows lost"
    lists = site.lists(12)
    lists['dog'].append(site.url(2, '/kill-client'))
    df = download_images(lists, tmp_path/'d', engine='ray', per_host=1, **KW)
    assert site.killed, 'the site killed no worker'
    row = df[df.url.str.endswith('/kill-client')].iloc[0]
    assert row.status == 'failed' and row.reason.startswith('interrupted (its Ray task ended: WorkerCrashedError'), row.reason
    other = [site.url(i, f'/i/{k*100 + i}.jpg') for k in (0, 1) for i in range(12) if i % 3 != 2]   # the other hosts' shards ran to their end
    assert (df.set_index('url').loc[other, 'status'] == 'ok').all()
    assert len(df) == sum(len(v) for v in lists.values())
    import builtins, types   # Ray showed the worker's death here: it no longer swaps print for its tqdm_ray one (which broke fastai's export)
    assert isinstance(builtins.print, types.BuiltinFunctionType), builtins.print


def test_a_lost_progress_actor_does_not_stop_the_download(cluster, site, tmp_path, monkeypatch):
    "The bar's `_Tally` actor killed mid-run (its worker OOM-killed): reading it raised ActorDiedError, which would have stopped the download"
    import psutil
    import imgclean.download as dl
    class Bar:
        def update(self, n): pass
    monkeypatch.setattr(dl, '_started_bar', lambda n, progress: Bar() if progress else None)
    site.latency = 0.1
    killed = []
    def kill_tally():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for p in psutil.process_iter(['cmdline']):   # Ray titles an actor's worker process "ray::_Tally..."
                if any('ray::_Tally' in c for c in p.info['cmdline'] or []): os.kill(p.pid, signal.SIGKILL); killed.append(p.pid)
            time.sleep(0.2)
    threading.Thread(target=kill_tally, daemon=True).start()
    lists = site.lists(30)
    df = download_images(lists, tmp_path/'d', engine='ray', per_host=1, **{**KW, 'progress': True})
    assert killed, 'no _Tally actor was found to kill'
    assert (df.status == 'ok').sum() == 61 and len(df) == sum(len(v) for v in lists.values())
