"""Downloads to s3:// through the real S3 protocol: moto's S3 server on loopback (`moto[server]`), s3fs as the client.
The endpoint reaches s3fs as a user with MinIO or R2 gives it: `AWS_ENDPOINT_URL` (botocore reads it when a client starts;
subprocesses and Ray's workers inherit it) or `FSSPEC_S3_ENDPOINT_URL` (fsspec reads it when it is imported)."""
import io, logging, os, re, socket, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fault_helpers import FaultServer, jpeg_bytes  # noqa: E402

s3fs = pytest.importorskip('s3fs', reason='s3fs is not installed (a dev requirement: pip install -e .[dev])')
moto_server = pytest.importorskip('moto.server', reason="moto's S3 server is not installed (pip install 'moto[server]')")
from imgclean.download import download_images  # noqa: E402

pytestmark = pytest.mark.timeout(180)
BUCKET = 'imgclean-test'
KW = dict(timeout=2, total_timeout=4, retries=0, progress=False, verbose=False)
KEY = ['class', 'url', 'status', 'file', 'bytes', 'width', 'height', 'hash']


def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def fresh_fs():
    "An s3fs client with no instance or listing cache: what the bucket holds now, not what this process saw before"
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


@pytest.fixture(scope='module')
def s3():
    "moto's S3 server on 127.0.0.1, dummy credentials and its endpoint in the environment, a bucket"
    logging.getLogger('werkzeug').setLevel(logging.WARNING)   # moto's server logs every request
    port = _free_port()
    srv = moto_server.ThreadedMotoServer(ip_address='127.0.0.1', port=port, verbose=False)
    srv.start()
    endpoint = f'http://127.0.0.1:{port}'
    env = dict(AWS_ACCESS_KEY_ID='imgclean-test', AWS_SECRET_ACCESS_KEY='imgclean-test', AWS_DEFAULT_REGION='us-east-1',
               AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED='true', AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    import fsspec
    with pytest.MonkeyPatch.context() as m:
        m.delitem(fsspec.config.conf, 's3', raising=False)   # FSSPEC_S3_* of this shell, read when fsspec was imported
        for k in ('AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL_S3', 'FSSPEC_S3_ENDPOINT_URL'): m.delenv(k, raising=False)
        for k, v in env.items(): m.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()   # a client made before started without this endpoint
        fresh_fs().mkdir(BUCKET)
        try: yield SimpleNamespace(endpoint=endpoint, env=env)
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            srv.stop()


@pytest.fixture(scope='module')
def sites():
    "Two image hosts on loopback (two hosts: two download processes) with 24 tiny JPEGs and the fault endpoints"
    files = {f'{i}.jpg': jpeg_bytes((30 + i, 24), (i*10 % 255, 90, 200 - i*5)) for i in range(24)}
    with FaultServer(files) as a, FaultServer(files, host='127.0.0.2') as b: yield a, b


@pytest.fixture
def lists(sites):
    "Three classes, 34 URLs: images, one image behind two URLs, a URL in two classes, a 404, an HTML page, an empty body, a truncated JPEG and a bomb (quarantined)"
    a, b = sites
    return {'cat': [a.img_url(f'{i}.jpg') for i in range(12)] + [a.url('dupA'), a.url('dupB'), a.url('truncated'), a.url('404')],
            'dog': [b.img_url(f'{i}.jpg') for i in range(12, 24)] + [b.url('html'), b.url('bomb')],
            'fox': [a.img_url('3.jpg'), b.img_url('5.jpg'), a.url('empty'), a.url('wrongtype')]}


@pytest.fixture
def url(s3, request):
    "A fresh destination in the bucket for this test"
    return f"s3://{BUCKET}/{re.sub('[^A-Za-z0-9_-]+', '-', request.node.name).strip('-')}/data"


def bucket_files(url):
    "{path under `url`: bytes} of the images at `url` (class folders only), read with a fresh client"
    fs, p = fresh_fs(), url.split('://', 1)[1]
    return {f[len(p) + 1:]: fs.cat_file(f) for f in fs.find(p) if not f[len(p) + 1:].startswith(('.', 'manifest'))}


def local_files(root): return {f.relative_to(root).as_posix(): f.read_bytes() for f in Path(root).glob('[!._]*/*') if f.is_file()}


def hits_of(sites, urls):
    "Requests the image hosts got for `urls` so far"
    return sum(s.hits.get(u.replace(s.base, ''), 0) for s in sites for u in urls if u.startswith(s.base))


def same_as_local(df, ref, url, root):
    "The run to `url` gave the manifest, files, manifest object and quarantine the local run `ref` gave in `root`"
    pd.testing.assert_frame_equal(df[KEY].sort_values('url', ignore_index=True), ref[KEY].sort_values('url', ignore_index=True))
    got = bucket_files(url)
    assert got == local_files(root) and len(got) == (ref.status == 'ok').sum() > 20
    fs, p = fresh_fs(), url.split('://', 1)[1]
    man = pd.read_csv(io.BytesIO(fs.cat_file(p + '/manifest.csv')), keep_default_na=False, dtype=str)
    assert man[['class', 'url', 'status', 'file']].sort_values('url', ignore_index=True).equals(
        ref[['class', 'url', 'status', 'file']].astype(str).sort_values('url', ignore_index=True))
    assert not fs.exists(p + '/.imgclean_shards')   # merged into the manifest, then removed
    q = sorted(f.rsplit('/', 1)[-1] for f in fs.find(p + '_quarantine'))
    assert q == sorted(f.name for f in Path(str(root) + '_quarantine').rglob('*') if f.is_file()) and 'report.csv' in q


def test_s3_gets_the_local_files_and_manifest_and_a_rerun_fetches_nothing(sites, lists, url, tmp_path):
    ref = download_images(lists, tmp_path/'local', **KW)
    df = download_images(lists, url, **KW)
    same_as_local(df, ref, url, tmp_path/'local')
    ok = ref.url[ref.status == 'ok'].tolist()
    before = hits_of(sites, ok)
    again = download_images(lists, url, **KW)   # resume reads the bucket: nothing fetched again
    assert hits_of(sites, ok) == before and (again.reason == 'already downloaded').sum() == (ref.status == 'ok').sum()
    assert again[KEY].equals(df[KEY]) and bucket_files(url) == local_files(tmp_path/'local')


def test_refused_downloads_land_in_the_quarantine_bucket_folder_with_their_report(lists, url):
    df = download_images(lists, url, **KW)
    fs, p = fresh_fs(), url.split('://', 1)[1]
    rep = pd.read_csv(io.BytesIO(fs.cat_file(p + '_quarantine/report.csv')), keep_default_na=False)
    assert sorted(rep.reason.str.split(' \\(', regex=True).str[0]) == ['too many pixels', 'truncated image'], rep
    assert {f.rsplit('/', 1)[-1] for f in fs.find(p + '_quarantine')} == {'report.csv', *rep.file.str.rsplit('/', n=1).str[-1]}
    bad = df.set_index('url').loc[[u for v in lists.values() for u in v if u.endswith(('/f/truncated', '/f/bomb'))]]
    assert (bad.status == 'failed').all() and bad.reason.str.startswith('verify: ').all() and (bad.file == '').all()
    assert df.set_index('url').loc[lists['cat'][-1], 'reason'] == 'http 404'


def test_files_deleted_from_the_bucket_are_seen_gone_in_the_same_process(sites, lists, url):
    "The listing a rerun resumes from is the bucket's now, not one this process cached on an earlier run"
    first = download_images(lists, url, **KW)
    download_images(lists, url, **KW)   # lists the class folders: s3fs caches those listings
    gone = first.file[first.status == 'ok'].tolist()[:3]
    p = url.split('://', 1)[1]
    fresh_fs().rm([f'{p}/{f}' for f in gone])   # as another process, the console or a cleaning step would
    again = download_images(lists, url, **KW)   # removed by the user: not fetched again, and said so
    why = again.set_index('url').loc[first.set_index('file').loc[gone, 'url'], 'reason'].tolist()
    assert all(r.startswith('removed earlier') for r in why), why
    assert not set(gone) & set(bucket_files(url))
    back = download_images(lists, url, refetch_removed=True, **KW)
    assert set(gone) <= set(bucket_files(url)), back[back.file.isin(gone)]


def test_download_processes_to_s3(sites, lists, url, tmp_path):
    ref = download_images(lists, tmp_path/'local', **KW)
    df = download_images(lists, url, processes=2, **KW)
    assert df.attrs['options']['processes'] == 2
    same_as_local(df, ref, url, tmp_path/'local')


@pytest.mark.parametrize('how', ['AWS_ENDPOINT_URL', 'FSSPEC_S3_ENDPOINT_URL'])
def test_the_command_line_downloads_to_s3(s3, sites, lists, url, tmp_path, how):
    "`imgclean download URLS s3://...` in a new process, the endpoint from its environment (botocore's or fsspec's variable)"
    ref = download_images(lists, tmp_path/'local', **KW)
    (tmp_path/'urls').mkdir()
    for c, us in lists.items(): (tmp_path/'urls'/f'urls_{c}.csv').write_text('\n'.join(us) + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('AWS_ENDPOINT_URL', 'FSSPEC_S3_ENDPOINT_URL')}
    env[how] = s3.endpoint
    root = str(Path(__file__).resolve().parents[1])
    env['PYTHONPATH'] = os.pathsep.join([root, env.get('PYTHONPATH', '')])
    p = subprocess.run([sys.executable, '-m', 'imgclean.cli', 'download', str(tmp_path/'urls'), url, '--retries', '0', '--timeout', '2',
                        '--no-progress'], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f'{sum(map(len, lists.values()))} URLs' in p.stdout, p.stdout
    fs, path = fresh_fs(), url.split('://', 1)[1]
    man = pd.read_csv(io.BytesIO(fs.cat_file(path + '/manifest.csv')), keep_default_na=False, dtype=str)
    assert man[['url', 'status', 'file']].sort_values('url', ignore_index=True).equals(
        ref[['url', 'status', 'file']].astype(str).sort_values('url', ignore_index=True))
    assert bucket_files(url) == local_files(tmp_path/'local')


def test_a_missing_bucket_fails_before_any_request_and_is_not_created(sites, lists, s3):
    before = {k: dict(s.hits) for k, s in enumerate(sites)}
    with pytest.raises((PermissionError, FileNotFoundError), match="imgclean-no-such-bucket"):
        download_images(lists, 's3://imgclean-no-such-bucket/data', **KW)
    assert {k: dict(s.hits) for k, s in enumerate(sites)} == before
    assert not fresh_fs().exists('imgclean-no-such-bucket')   # a typo in the name does not make a new bucket


def test_a_wrong_endpoint_is_a_clear_error_before_any_request(sites, lists, s3, monkeypatch):
    "An endpoint nobody answers on (a typo in AWS_ENDPOINT_URL): our error naming the store and what to check, not botocore's traceback"
    monkeypatch.setenv('AWS_ENDPOINT_URL', f'http://127.0.0.1:{_free_port()}')   # closed: connections are refused
    monkeypatch.setenv('AWS_MAX_ATTEMPTS', '1')   # botocore's retries would only make the test slower
    s3fs.S3FileSystem.clear_instance_cache()
    before = {k: dict(s.hits) for k, s in enumerate(sites)}
    try:
        with pytest.raises(PermissionError, match=r'cannot reach s3://imgclean-test/elsewhere .*EndpointConnectionError.*AWS_ENDPOINT_URL'):
            download_images(lists, f's3://{BUCKET}/elsewhere', **KW)
    finally: s3fs.S3FileSystem.clear_instance_cache()   # the next test's client starts with the right endpoint
    assert {k: dict(s.hits) for k, s in enumerate(sites)} == before


def test_a_read_only_bucket_fails_before_any_request(sites, lists, s3, url, monkeypatch):
    "Credentials that may read but not write (moto's IAM enforced): the clear error, and no image fetched"
    import boto3, fsspec, json, urllib.request
    iam = boto3.client('iam')
    iam.create_user(UserName='reader')
    iam.put_user_policy(UserName='reader', PolicyName='read', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [
        {'Effect': 'Allow', 'Action': ['s3:GetObject', 's3:ListBucket', 's3:HeadBucket', 's3:GetBucketLocation'], 'Resource': '*'}]}))
    k = iam.create_access_key(UserName='reader')['AccessKey']
    monkeypatch.setitem(fsspec.config.conf, 's3', {'key': k['AccessKeyId'], 'secret': k['SecretAccessKey']})   # a new s3fs client with these
    before = {i: dict(s.hits) for i, s in enumerate(sites)}
    auth = lambda n: urllib.request.urlopen(urllib.request.Request(f'{s3.endpoint}/moto-api/reset-auth', data=str(n).encode(), method='POST',
                                                                     headers={'Content-Type': 'text/plain'}))
    auth(0)   # from now on moto checks credentials and policies
    try:
        with pytest.raises(PermissionError, match=f'cannot write to {url}.*Access Denied.*credentials'): download_images(lists, url, **KW)
    finally: auth('inf')
    assert {i: dict(s.hits) for i, s in enumerate(sites)} == before


@pytest.fixture(scope='module')
def cluster(s3):
    """A local Ray cluster (2 CPUs) started without the endpoint in its environment, as a cluster started apart is (`ray start`
    on each node, then `address='auto'`): its workers see the endpoint only if the run passes it on"""
    ray = pytest.importorskip('ray', reason="the ray extra is not installed (pip install 'imgclean[ray]')")
    with pytest.MonkeyPatch.context() as m:
        m.delenv('AWS_ENDPOINT_URL')
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize('how', ['AWS_ENDPOINT_URL', 'fsspec config'])
def test_ray_tasks_upload_their_shards_to_s3(cluster, s3, sites, lists, url, tmp_path, monkeypatch, how):
    "Ray's tasks reach the endpoint given to the driver: in its environment (botocore's variable) or in fsspec's config"
    import fsspec
    if how == 'fsspec config':   # what FSSPEC_S3_ENDPOINT_URL or ~/.config/fsspec/s3.json give: the client's own options
        monkeypatch.delenv('AWS_ENDPOINT_URL'); monkeypatch.setitem(fsspec.config.conf, 's3', {'endpoint_url': s3.endpoint})
    ref = download_images(lists, tmp_path/'local', **KW)
    df = download_images(lists, url, engine='ray', **KW)
    same_as_local(df, ref, url, tmp_path/'local')
    ok = ref.url[ref.status == 'ok'].tolist()
    before = hits_of(sites, ok)
    again = download_images(lists, url, engine='ray', **KW)
    assert hits_of(sites, ok) == before and (again.reason == 'already downloaded').sum() == len(ok)
