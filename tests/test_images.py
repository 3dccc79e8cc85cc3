"""Keep every real image: each mode Pillow produces becomes the right RGB; Pillow's own odd test images are kept, or
refused by a stated policy, or (when Pillow cannot decode them) refused with the true cause; on the verify path and on
the download path (bytes checked on arrival)."""
import io, os, shutil, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _fault_helpers import FaultServer, odd_images  # noqa: E402

from imgclean.core import MAX_PIXELS
from imgclean.download import download_images
from imgclean.images import WEB_FORMATS, check_image, format_name, load_rgb, sniff_image, to_rgb
from imgclean.verify import _pixel_digest, verify_dataset, verify_images

PILLOW = Path(__file__).parent/'data'/'pillow'
FILES = sorted(p.name for p in PILLOW.iterdir() if not p.name.startswith('.'))
CAUSES = ('truncated image', 'cannot decode (', 'not an image', 'unsupported format')   # what a file Pillow cannot decode may be told


def pillow_reference(data):
    "What Pillow itself makes of `data`: ('huge'|'decodes'|'fails', our name of its format or None, size or None)"
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try: im = Image.open(io.BytesIO(data))
            except Exception: return 'fails', None, None
            fmt, size = format_name(im.format), im.size
            if size[0]*size[1] > MAX_PIXELS: return 'huge', fmt, size
            try: im.load()
            except Exception: return 'fails', fmt, size
            return 'decodes', fmt, size
    finally: Image.MAX_IMAGE_PIXELS = old


def expected(ref, reason, ok, formats=WEB_FORMATS, min_size=8):
    "Is (ok, reason) what the policy promises for a file Pillow judged `ref`? Returns '' or what is wrong"
    kind, fmt, size = ref
    if reason.startswith('internal error'): return f'our bug: {reason}'
    if kind == 'huge': return '' if reason.startswith('too many pixels') else f'expected too many pixels, got {ok} {reason!r}'
    if kind == 'fails':
        if ok: return 'kept a file Pillow cannot decode'
        return '' if reason.startswith(CAUSES) else f'unexpected cause {reason!r}'
    if formats is not None and fmt not in formats:
        return '' if reason.startswith('unsupported format') else f'expected unsupported format {fmt}, got {ok} {reason!r}'
    if min(size) < min_size: return '' if reason.startswith('too small') else f'expected too small {size}, got {ok} {reason!r}'
    return '' if ok else f'Pillow decodes it, we refused: {reason!r}'


@pytest.mark.parametrize('name', FILES)
def test_check_image_on_pillow_test_images(name):
    data = (PILLOW/name).read_bytes()
    ref = pillow_reference(data)
    r = check_image(data, max_size=64)
    assert expected(ref, r['reason'], r['ok']) == '', (name, ref)
    if ref[0] == 'decodes' and ref[1] != 'eps':   # with every format and size accepted, all Pillow decodes is kept
        r2 = check_image(data, max_size=64, formats=None, min_size=0)
        assert r2['ok'], (name, r2['reason'])


@pytest.mark.parametrize('name', FILES)
def test_digest_taken_while_decoding_is_the_pixels_kept(name):
    "verify pairs duplicates on a digest check_image takes from what it decoded: it must be the digest of the file as kept"
    data = (PILLOW/name).read_bytes()
    for max_size in (None, 64):
        r = check_image(data, max_size=max_size, formats=None, min_size=0, digest=lambda key: True)
        if r['digest']: assert r['digest'] == _pixel_digest(io.BytesIO(r['data'])), (name, max_size)


def test_the_crashes_the_issue_names_are_kept():
    "16-bit TIFFs, a 1-bit PNG with transparency and tiny JPEGs crashed our conversion; they are kept now"
    for name in ('16bit.MM.cropped.tif', '12in16bit.tif', '1_trns.png'):
        r = check_image((PILLOW/name).read_bytes())
        assert r['ok'] and Image.open(io.BytesIO(r['data'])).mode in ('RGB', 'L', '1'), (name, r['reason'])
    for name in ('app13.jpg', 'xmp_padded.jpg', 'jfif_unit_cm.jpg', 'multiple_exif.jpg', 'orientation_rectangle.jpg'):
        assert check_image((PILLOW/name).read_bytes(), min_size=0)['ok'], name   # was ZeroDivisionError in the 1/8-scale decode
        assert check_image((PILLOW/name).read_bytes())['reason'].startswith('too small ('), name   # the default policy says why
    r = check_image((PILLOW/'orientation_rectangle.jpg').read_bytes(), min_size=0)
    assert (r['width'], r['height']) == (1, 2)   # EXIF orientation 6 on a 2x1 JPEG: upright it is 1x2


def test_policy_reasons_say_what_to_pass():
    assert check_image((PILLOW/'five_channels.psd').read_bytes())['reason'] == \
        "unsupported format PSD; pass formats=(..., 'psd') to accept it (or formats=None for every format Pillow reads)"
    assert check_image((PILLOW/'five_channels.psd').read_bytes(), formats=WEB_FORMATS + ('psd',), min_size=0)['ok']   # a 1x1 PSD
    assert check_image((PILLOW/'avif_hopper.heif').read_bytes())['reason'].startswith('unsupported format HEIC: Pillow cannot read it')
    assert check_image((PILLOW/'la.tga').read_bytes())['reason'].startswith('unsupported format TGA')   # no signature: Pillow names it
    bomb = check_image((PILLOW/'decompression_bomb.gif').read_bytes())['reason']
    assert bomb.startswith('too many pixels (65535x66601') and 'max_pixels 89,478,485' in bomb and 'pass max_pixels=' in bomb
    assert check_image((PILLOW/'bmp_README.txt').read_bytes())['reason'] == 'not an image (text)'
    assert check_image((PILLOW/'trailer_loop.pdf').read_bytes())['reason'] == 'not an image (a PDF document)'


def test_unexpected_exceptions_are_reported_as_our_bug():
    "An exception in our own conversion step is an internal error to report, never 'cannot decode'"
    rgba = io.BytesIO(); Image.new('RGBA', (20, 20)).save(rgba, 'PNG')
    r = check_image(rgba.getvalue(), background='no such colour')   # compositing fails: our step, not the file
    assert not r['ok'] and r['reason'].startswith('internal error (TypeError') and r['reason'].endswith('please report it')


@pytest.mark.parametrize('name', sorted(odd_images()))
def test_every_mode_becomes_the_right_rgb(name):
    data, px = odd_images()[name]
    r = check_image(data, min_size=0)
    assert r['ok'], r['reason']
    kept = Image.open(io.BytesIO(r['data']))
    assert kept.mode in ('RGB', 'L', '1', 'P') and 'transparency' not in kept.info   # what fastai's convert('RGB') shows right
    assert load_rgb(io.BytesIO(data)).mode == 'RGB'
    if px is not None:
        assert kept.convert('RGB').getpixel((0, 0)) == px
        with Image.open(io.BytesIO(data)) as im: assert to_rgb(im).getpixel((0, 0)) == px   # the server's path: to_rgb on an upload
    if name.startswith('anim'): assert r['note'] == 'animated, 2 frames: the first frame is kept'


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "The Pillow files in one class folder, checked by verify_dataset (max_size 64), and Pillow's reference for each"
    root = tmp_path_factory.mktemp('corpus')/'ds'
    (root/'a').mkdir(parents=True)
    for n in FILES: shutil.copy(PILLOW/n, root/'a'/n)
    refs = {n: pillow_reference((PILLOW/n).read_bytes()) for n in FILES}
    df = verify_dataset(root, max_size=64, progress=False, verbose=False, n_workers=0)
    return root, df.set_index('file'), refs


def test_verify_path_keeps_or_refuses_each_file_truthfully(corpus):
    root, df, refs = corpus
    assert sorted(df.index) == [f'a/{n}' for n in FILES]
    wrong = {n: expected(refs[n], df.reason[f'a/{n}'], df.ok[f'a/{n}']) for n in FILES}
    assert {n: w for n, w in wrong.items() if w} == {}
    q = root.parent/'ds_quarantine'
    kept, moved = {p.name for p in (root/'a').iterdir()}, {p.name for p in (q/'a').iterdir()}
    assert kept | moved == set(FILES) and not kept & moved   # nothing lost, nothing twice
    assert set(pd.read_csv(q/'report.csv').file) == {f'a/{n}' for n in moved}


def test_kept_images_load_in_fastai_as_rgb_within_max_size(corpus):
    from fastai.vision.core import PILImage
    root, df, _ = corpus
    for f in df.index[df.ok]:
        im = PILImage.create(root/f)
        assert im.mode == 'RGB' and max(im.size) <= 64, (f, im.mode, im.size)


def test_download_path_gives_the_same_verdicts(corpus, tmp_path):
    "The same bytes served over HTTP and checked on arrival end as the verify path decided (reason for reason)"
    _, vdf, _ = corpus
    with FaultServer({n: (PILLOW/n).read_bytes() for n in FILES}) as s:
        urls = {s.img_url(n): n for n in FILES}
        man = download_images({'a': list(urls)}, tmp_path/'dl', max_size=64, progress=False, verbose=False, retries=0, timeout=10).set_index('url')
    for u, n in urls.items():
        row, v = man.loc[u], vdf.loc[f'a/{n}']
        if v.ok: assert row.status == 'ok', (n, row.reason)
        else: assert row.status == 'failed' and row.reason.startswith(f'verify: {v.reason} (kept in quarantine'), (n, row.reason, v.reason)
    assert len(list((tmp_path/'dl'/'a').iterdir())) == int(vdf.ok.sum())


def test_verify_images_list_form_returns_only_what_fastai_cannot_open(corpus, tmp_path):
    "fastai's form: the L of files that do not decode, left in place; a PSD or a 1x1 image is not among them"
    for n in FILES: shutil.copy(PILLOW/n, tmp_path/n)
    before = {n: (tmp_path/n).read_bytes() for n in FILES}
    failed = verify_images([tmp_path/n for n in FILES], progress=False)
    refs = corpus[2]
    assert sorted(f.name for f in failed) == sorted(n for n in FILES if refs[n][0] != 'decodes' and n != 'pillow.ico')
    assert {n: (tmp_path/n).read_bytes() for n in FILES} == before   # nothing moved or rewritten
    assert all(failed.reasons[f] for f in failed)


def test_a_transparent_png_near_the_pixel_limit_is_checked_without_extra_full_size_copies(tmp_path):
    "A 9000x9000 RGBA PNG took ~1.1 GB over its decode (the decoded file, its RGB version, 3 full-size copies in the PNG writer): 6 at once ran a 4 GB machine out of memory"
    import subprocess
    w = h = 4000
    Image.new('RGBA', (w, h), (40, 10, 10, 128)).save(tmp_path/'big.png')
    code = ("import resource, sys\nfrom pathlib import Path\nfrom imgclean.images import check_image\n"
            f"data = Path({str(tmp_path/'big.png')!r}).read_bytes()\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "v = check_image(data, min_size=0)\nassert v['ok'] and v['data'][:8] == b'\\x89PNG\\r\\n\\x1a\\n', v\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)*1024)\n")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
    assert p.returncode == 0, p.stderr
    growth = int(p.stdout.split()[-1])
    assert growth < 1.6*w*h*4, f"{growth/2**20:.0f} MB over the bytes for a {w*h*4/2**20:.0f} MB decoded image"   # the decode, its RGB version, an alpha band


def test_a_jpeg_cut_inside_its_header_is_damaged_not_our_bug():
    "Pillow 13 has no MPO opener: asking for it raised KeyError('MPO'), reported as 'internal error ... please report it'"
    b = io.BytesIO(); Image.new('RGB', (32, 32), 'red').save(b, 'JPEG'); jpg = b.getvalue()
    reasons = [check_image(jpg[:n])['reason'] for n in (4, 10, 24, 100, len(jpg) // 2)]
    assert not [r for r in reasons if 'internal error' in r], reasons
    assert all(r in ('truncated image', 'cannot decode (damaged or unsupported JPG header)') for r in reasons), reasons
