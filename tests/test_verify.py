"Verifier: full decode, bombs as reasons, EXIF/mode fixes, resize, quarantine (moved, never deleted), duplicates, manifest; fastai's verify_images forms."
import io, os, re, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _fault_helpers import bomb_png, jpeg_bytes  # noqa: E402
import shutil

from imgclean.images import check_image
from imgclean.verify import verify_dataset, verify_images
from imgclean.download import MANIFEST_COLS
from fastai.data.transforms import get_image_files
from fastai.vision.core import PILImage


def _exif_rotated(fn):
    "A 40x20 JPEG whose EXIF says 'rotate 90' (orientation 6): upright it is 20x40"
    im = Image.new('RGB', (40, 20), 'red'); ex = im.getexif(); ex[0x0112] = 6
    im.save(fn, 'JPEG', exif=ex.tobytes())


@pytest.fixture
def messy(tmp_path):
    root = tmp_path/'ds'
    for c in ('a', 'b'): (root/c).mkdir(parents=True)
    for i in range(3): Image.new('RGB', (30, 30), (i*60, 10, 10)).save(root/'a'/f'{i}.png')
    Image.new('P', (30, 30), 3).save(root/'a'/'palette.png')
    Image.new('RGBA', (30, 30), (0, 0, 255, 100)).save(root/'a'/'alpha.png')
    Image.new('CMYK', (30, 30), (0, 50, 50, 0)).save(root/'a'/'cmyk.jpg')
    Image.fromarray(np.full((30, 30), 40000, np.uint16)).save(root/'a'/'deep.png')
    Image.new('L', (30, 30), 128).save(root/'b'/'gray.png')
    frames = [Image.new('RGB', (30, 30), c) for c in ('red', 'green')]
    frames[0].save(root/'b'/'anim.gif', save_all=True, append_images=frames[1:])
    _exif_rotated(root/'b'/'rot.jpg')
    Image.new('RGB', (400, 200), 'white').save(root/'b'/'large.jpg')
    (root/'b'/'cut.jpg').write_bytes(jpeg_bytes((64, 64))[:200])
    (root/'b'/'page.jpg').write_bytes(b'<!doctype html><html>200 but html</html>')
    (root/'b'/'empty.png').write_bytes(b'')
    (root/'b'/'bomb.png').write_bytes(bomb_png())
    (root/'a'/'copy.png').write_bytes((root/'a'/'0.png').read_bytes())
    (root/'_rejected').mkdir(); (root/'_rejected'/'x.txt').write_text('not a class')
    (root/'manifest.csv').write_text('class,url,status,reason,file,bytes,width,height,hash\n'
                                     'b,http://x/cut,ok,,b/cut.jpg,200,64,64,h1\nb,http://x/large,ok,,b/large.jpg,9,400,200,h2\n')
    return root


def test_verify_messy_folder(messy):
    root = messy
    with warnings.catch_warnings():
        warnings.simplefilter('error')     # a decompression bomb is a row, not a warning
        df = verify_dataset(root, max_size=100, progress=False, n_workers=0)
    r = df.set_index('file')
    assert len(df) == 16 and set(df.label) == {'a', 'b'}
    assert sorted(r.index[~r.ok]) == ['b/bomb.png', 'b/cut.jpg', 'b/empty.png', 'b/page.jpg']
    assert r.reason['b/bomb.png'].startswith('too many pixels (30000x30000') and r.reason['b/cut.jpg'] == 'truncated image'
    assert r.reason['b/page.jpg'] == 'not an image (an HTML page)' and r.reason['b/empty.png'] == 'empty file'
    # converted to RGB, upright, first frame, resized
    for f in ('a/alpha.png', 'a/cmyk.jpg', 'a/deep.png', 'b/rot.jpg', 'b/large.jpg'):
        with Image.open(root/f) as im: assert im.mode == 'RGB', f
    for f, mode in (('a/palette.png', 'P'), ('b/gray.png', 'L')):   # fastai's own convert('RGB') gives the same pixels: left as they are
        with Image.open(root/f) as im: assert im.mode == mode, f
    for f in r.index[r.ok]: assert PILImage.create(root/f).mode == 'RGB'
    assert Image.open(root/'b'/'rot.jpg').size == (20, 40)
    assert Image.open(root/'b'/'large.jpg').size == (100, 50) and r.resized['b/large.jpg'] and not r.resized['a/0.png']
    assert (r.width['b/anim.gif'], r.height['b/anim.gif']) == (30, 30)
    assert np.asarray(Image.open(root/'a'/'deep.png'))[0, 0, 0] == round(40000*255/65535)   # scaled, not clipped
    assert r.dup_of['a/copy.png'] == 'a/0.png'
    # quarantine: outside the root, moved not deleted, with a report
    q = root.parent/'ds_quarantine'
    assert sorted(str(p.relative_to(q)) for p in q.rglob('*') if p.is_file()) == \
        ['b/bomb.png', 'b/cut.jpg', 'b/empty.png', 'b/page.jpg', 'report.csv']
    rep = pd.read_csv(q/'report.csv')
    assert set(rep.file) == {'b/bomb.png', 'b/cut.jpg', 'b/empty.png', 'b/page.jpg'} and rep.reason.notna().all()
    assert (root/'_rejected'/'x.txt').exists()
    for f in (fn for d in ('a', 'b') for fn in (root/d).iterdir()):
        with Image.open(f) as im: im.load()
    man = pd.read_csv(root/'manifest.csv', keep_default_na=False)
    assert man.status.tolist() == ['failed', 'ok'] and man.reason[0].startswith('verify: truncated image')
    assert (man.width[1], man.height[1]) == (100, 50)


def test_second_run_and_name_clash(messy):
    verify_dataset(messy, progress=False, n_workers=0, verbose=False)
    (messy/'b'/'cut.jpg').write_bytes(b'garbage again')
    df = verify_dataset(messy, progress=False, n_workers=0, verbose=False)
    assert (~df.ok).sum() == 1
    q = messy.parent/'ds_quarantine'
    assert (q/'b'/'cut.jpg').exists() and (q/'b'/'cut_1.jpg').exists()      # nothing overwritten
    assert len(pd.read_csv(q/'report.csv')) == 5


def test_parallel_matches_serial(tmp_path):
    root = tmp_path/'many'
    (root/'c').mkdir(parents=True)
    for i in range(80): Image.new('RGB', (24, 24), (i, 2*i, 3)).save(root/'c'/f'{i:03d}.jpg')
    (root/'c'/'zz_bad.jpg').write_bytes(jpeg_bytes()[:100])
    df = verify_dataset(root, n_workers=2, progress=False, verbose=False)
    assert len(df) == 81 and (~df.ok).sum() == 1 and df.file[~df.ok].tolist() == ['c/zz_bad.jpg']


def test_custom_quarantine_and_errors(tmp_path, class_folders):
    (class_folders/'circle'/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\nbroken')
    df = verify_dataset(class_folders, quarantine=tmp_path/'rej', progress=False, n_workers=0, verbose=False)
    assert (~df.ok).sum() == 1 and (tmp_path/'rej'/'circle'/'bad.png').exists()
    with pytest.raises(FileNotFoundError, match='dataset root'): verify_dataset(tmp_path/'nope')


def test_check_image_bomb_limit(tmp_path):
    Image.new('RGB', (100, 100)).save(tmp_path/'x.png')
    assert check_image(tmp_path/'x.png', max_pixels=5000)['reason'].startswith('too many pixels (100x100 = 10,000, over max_pixels 5,000')
    assert check_image(tmp_path/'x.png')['ok']


def test_saved_models_are_not_quarantined(class_folders):
    "Rerunning verify after `learn.save` must leave fastai's models/*.pth alone (they are not images of a class)"
    (class_folders/'models').mkdir(); (class_folders/'models'/'stage-1.pth').write_bytes(b'PK\x03\x04 not an image')
    df = verify_dataset(class_folders, progress=False, verbose=False, n_workers=0)
    assert (class_folders/'models'/'stage-1.pth').exists()
    assert df.ok.astype(bool).all() and len(df) == 36
    # a class that happens to be called "models" still counts when it holds images
    (class_folders/'models'/'x.png').write_bytes((class_folders/'circle'/'000.png').read_bytes())
    df = verify_dataset(class_folders, progress=False, verbose=False, n_workers=0)
    assert len(df) == 38 and not (class_folders/'models'/'stage-1.pth').exists()


def test_policy_refusals_are_quarantined_with_a_sentence(tmp_path):
    "formats, min_size and max_pixels are options of verify: a refused file is moved with a reason that says how to keep it"
    root = tmp_path/'ds'; (root/'a').mkdir(parents=True)
    Image.new('RGB', (1, 1)).save(root/'a'/'pixel.gif')
    Image.new('RGB', (64, 64)).save(root/'a'/'big.png')
    (root/'a'/'layers.psd').write_bytes(b'8BPS\x00\x01' + bytes(40))
    Image.new('RGB', (32, 32)).save(root/'a'/'ok.png')
    df = verify_dataset(root, max_pixels=4000, progress=False, verbose=False, n_workers=0).set_index('file')
    assert df.reason['a/pixel.gif'] == 'too small (1x1 < min_size 8); pass min_size= to accept smaller images'
    assert df.reason['a/big.png'].endswith('pass max_pixels= (on the command line: --max-pixels) to accept larger images') and 'max_pixels 4,000' in df.reason['a/big.png']
    assert df.reason['a/layers.psd'].startswith("unsupported format PSD; pass formats=(..., 'psd')")
    assert df.ok['a/ok.png'] and sorted(p.name for p in (root/'a').iterdir()) == ['ok.png']
    for n in ('pixel.gif', 'big.png', 'layers.psd'): shutil.move(str(tmp_path/'ds_quarantine'/'a'/n), str(root/'a'/n))
    again = verify_dataset(root, max_pixels=10_000, min_size=0, progress=False, verbose=False, n_workers=0).set_index('file')
    assert again.ok[['a/pixel.gif', 'a/big.png', 'a/ok.png']].all() and not again.ok['a/layers.psd']   # PSD: a damaged header


def test_verify_images_fastai_v2_form(class_folders):
    "failed = verify_images(get_image_files(path)); failed.map(Path.unlink): the failures come back, left in place"
    (class_folders/'circle'/'bad.jpg').write_bytes(jpeg_bytes((64, 64))[:300])
    (class_folders/'square'/'page.png').write_text('<html>not an image</html>')
    before = {f: f.read_bytes() for f in get_image_files(class_folders)}
    failed = verify_images(get_image_files(class_folders))
    assert sorted(f.name for f in failed) == ['bad.jpg', 'page.png'] and all(f.exists() for f in failed)
    assert {f: f.read_bytes() for f in get_image_files(class_folders)} == before   # nothing moved or rewritten
    failed.map(Path.unlink)
    assert len(verify_images(get_image_files(class_folders))) == 0 and len(get_image_files(class_folders)) == 36
    with pytest.raises(ValueError, match='leaves them in place'): verify_images(get_image_files(class_folders), delete=True)


def test_verify_images_fastai_v1_form(class_folders, tmp_path):
    "verify_images(path/c, delete=True, max_size=N): failures moved to quarantine (not deleted), the rest resized"
    import shutil as sh
    (class_folders/'circle'/'bad.jpg').write_bytes(jpeg_bytes((64, 64))[:300])
    Image.new('RGB', (100, 50)).save(class_folders/'circle'/'wide.png')
    df = verify_images(class_folders/'circle', delete=True, max_size=20, progress=False)
    assert not (class_folders/'circle'/'bad.jpg').exists()
    assert (class_folders.parent/'shapes_quarantine'/'circle'/'bad.jpg').exists()
    assert Image.open(class_folders/'circle'/'wide.png').size == (20, 10) and df.resized.sum() == 13
    (class_folders/'square'/'bad.jpg').write_bytes(jpeg_bytes((64, 64))[:300])
    kept = verify_images(class_folders/'square', delete=False, progress=False)
    assert (class_folders/'square'/'bad.jpg').exists() and kept.set_index('file').reason['square/bad.jpg'] == 'truncated image'
    with pytest.raises(FileNotFoundError, match='not a folder'): verify_images(tmp_path/'nope')
    with pytest.raises(ValueError, match='n_channels'): verify_images(class_folders/'square', n_channels=1)


def test_verify_brings_the_manifest_rows_of_kept_files_up_to_date(tmp_path):
    "A resize updates bytes and hash too; a row left stale (a download writing meanwhile) is repaired by the next verify, files unchanged"
    from imgclean.core import file_hash
    root = tmp_path/'ds'; (root/'a').mkdir(parents=True)
    (root/'a'/'x.jpg').write_bytes(jpeg_bytes((400, 300)))
    stale = 'class,url,status,reason,file,bytes,width,height,hash\na,http://x/1,ok,,a/x.jpg,1,400,300,h1\n'
    (root/'manifest.csv').write_text(stale)
    def row(): return pd.read_csv(root/'manifest.csv', keep_default_na=False, dtype=str).iloc[0][['bytes', 'width', 'height', 'hash']].tolist()
    verify_dataset(root, max_size=100, progress=False, verbose=False)
    want = [str((root/'a'/'x.jpg').stat().st_size), '100', '75', file_hash(root/'a'/'x.jpg')]
    assert row() == want
    (root/'manifest.csv').write_text(stale)
    df = verify_dataset(root, max_size=100, progress=False, verbose=False)
    assert df.reused.all() and row() == want


def _bad_files_dataset(root, n_bad=6):
    "Two classes of good PNGs and `n_bad` truncated JPEGs, with a manifest that says every file is ok"
    rows = []
    for c in ('a', 'b'):
        (root/c).mkdir(parents=True)
        for i in range(3): Image.new('RGB', (30, 30), (i*60, 10, 10)).save(root/c/f'{i}.png'); rows.append((c, f'{c}/{i}.png'))
    for i in range(n_bad): (root/'a'/f'cut{i}.jpg').write_bytes(jpeg_bytes((64, 64))[:200 + i]); rows.append(('a', f'a/cut{i}.jpg'))
    man = pd.DataFrame([dict(zip(MANIFEST_COLS, [c, f'http://x/{f}', 'ok', '', f, 1, 30, 30, 'h'])) for c, f in rows])
    man.to_csv(root/'manifest.csv', index=False)
    return root


def _report(q): return pd.read_csv(q/'report.csv', keep_default_na=False, dtype=str)


def test_a_verify_killed_while_it_quarantines_loses_no_reason(tmp_path):
    "Killed after moving some files and before writing the report: they sat in quarantine with no reason, the manifest said ok"
    import subprocess
    root = _bad_files_dataset(tmp_path/'ds')
    code = ("import os, signal, sys\nn = [0]; move = os.rename\n"   # quarantine moves are renames
            "def killing_move(*a):\n    n[0] += 1\n    if n[0] == 3: os.kill(os.getpid(), signal.SIGKILL)\n    return move(*a)\n"
            "os.rename = killing_move\nfrom imgclean.verify import verify_dataset\n"
            f"verify_dataset({str(root)!r}, progress=False, n_workers=0)\n")
    p = subprocess.run([sys.executable, '-c', code], cwd=Path(__file__).parents[1], timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
    assert p.returncode == -9
    q = tmp_path/'ds_quarantine'
    moved = sorted(f.relative_to(q).as_posix() for f in q.rglob('*.jpg'))
    assert len(moved) == 2 and set(moved) <= set(_report(q).quarantined)          # every moved file has its reason
    verify_dataset(root, progress=False, verbose=False)                               # the rerun
    rep = _report(q)
    assert sorted(rep.quarantined) == [f'a/cut{i}.jpg' for i in range(6)] and (rep.reason != '').all()
    assert all((q/f).is_file() for f in rep.quarantined) and not list((root/'a').glob('cut*'))
    man = pd.read_csv(root/'manifest.csv', keep_default_na=False, dtype=str).set_index('url')
    assert (man.loc[[f'http://x/a/cut{i}.jpg' for i in range(6)], 'status'] == 'failed').all()
    assert (man.status == 'ok').sum() == 6 and all((root/f).is_file() for f in man.file[man.status == 'ok'])


def test_a_verify_interrupted_while_it_quarantines_reports_only_what_it_moved(tmp_path, monkeypatch):
    root = _bad_files_dataset(tmp_path/'ds')
    n, move = [0], os.rename   # quarantine moves are renames
    def interrupted(*a):
        n[0] += 1
        if n[0] == 3: raise KeyboardInterrupt
        return move(*a)
    monkeypatch.setattr(os, 'rename', interrupted)
    with pytest.raises(KeyboardInterrupt): verify_dataset(root, progress=False, verbose=False, n_workers=0)
    q = tmp_path/'ds_quarantine'
    assert sorted(_report(q).quarantined) == sorted(f.relative_to(q).as_posix() for f in q.rglob('*.jpg')) and len(_report(q)) == 2


def test_temporary_files_of_a_killed_run_are_swept_by_the_next_verify(tmp_path):
    "A kill mid-write left .<name>.<pid>....tmp files in class folders (and a model-sized one beside export.pkl) for good"
    import subprocess, time
    from imgclean.core import sweep_tmp
    root = _bad_files_dataset(tmp_path/'ds', n_bad=0)
    p = subprocess.Popen([sys.executable, '-c', 'pass']); p.wait()                # a pid that is gone
    old = time.time() - 3600
    dead = [root/'a'/f'.0.png.{p.pid}.140250633287360.18cc3f.tmp', root/f'.cleaned.csv.{p.pid}.1.abcdef.tmp', root/f'.export.pkl.{p.pid}.tmp']
    live = root/'b'/f'.1.png.{os.getpid()}.1.abcdef.tmp'                          # a writer still running
    fresh = root/'b'/f'.2.png.{p.pid}.1.abcdef.tmp'                               # just written (maybe by another machine)
    for f in dead + [live, fresh]: f.write_bytes(b'partial')
    for f in dead + [live]: os.utime(f, (old, old))
    verify_dataset(root, progress=False, verbose=False)
    assert not any(f.exists() for f in dead) and live.exists() and fresh.exists()
    assert (root/'a'/'0.png').is_file() and sweep_tmp(root/'b') == 0


def test_verify_images_list_keeps_what_fastai_keeps_and_an_empty_folder_is_no_error(tmp_path):
    "The book's `failed.map(Path.unlink)` deleted a valid 96-megapixel photo fastai keeps; an empty class folder raised KeyError"
    from fastai.vision.utils import verify_images as fastai_verify
    (tmp_path/'a').mkdir(); (tmp_path/'empty').mkdir()
    Image.new('L', (12000, 8000)).save(tmp_path/'a'/'big.png')          # 96 Mpx: over Pillow's warning, under its error
    (tmp_path/'a'/'cut.jpg').write_bytes(jpeg_bytes((64, 64))[:200])
    fns = sorted((tmp_path/'a').iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert list(verify_images(fns, progress=False)) == list(fastai_verify(fns)) == [tmp_path/'a'/'cut.jpg']
    assert len(verify_images(tmp_path/'empty', progress=False, verbose=False)) == 0


def test_a_read_only_dataset_is_refused_up_front(tmp_path):
    "A read-only dataset (Kaggle's input folder) with a broken file: a raw OSError [Errno 30] at the first move, after the decoding"
    from conftest import make_class_folders, read_only
    root = make_class_folders(tmp_path/'d', n=3)
    (root/'circle'/'bad.png').write_bytes(b'not an image')
    with read_only(root) as ro:
        with pytest.raises(PermissionError, match=r"is read-only: verify_dataset moves the images that fail out of it.*verify_images\(get_image_files\(path\)\)"):
            verify_dataset(ro, progress=False, verbose=False)
        assert (ro/'circle'/'bad.png').is_file() and not (tmp_path/'d_ro_quarantine').exists()
        # fastai v1's folder form too (it resizes in place and moves failures): before, a raw OSError about a temporary file
        with pytest.raises(PermissionError, match=r"is read-only: verify_images\(folder\) moves"):
            verify_images(ro/'circle', delete=True, max_size=20, progress=False, verbose=False)
        assert (ro/'circle'/'bad.png').is_file()


def test_a_misspelt_format_is_a_value_error_before_any_work(class_folders):
    "formats=('jpg', 'pngg') quarantined every PNG as 'unsupported format PNG' without a word about the typo"
    for call in (lambda: verify_dataset(class_folders, formats=('jpg', 'pngg'), progress=False, verbose=False),
                 lambda: verify_images(class_folders/'circle', formats=('pngg',), progress=False, verbose=False),
                 lambda: check_image(class_folders/'circle'/'000.png', formats=('pngg',))):
        with pytest.raises(ValueError, match="unknown image format 'pngg' in formats=; use names among .*png"): call()
    assert len(list((class_folders/'circle').iterdir())) == 12 and not (class_folders.parent/'shapes_quarantine').exists()
    assert verify_dataset(class_folders, formats=('jpeg', 'PNG'), progress=False, verbose=False).ok.all()   # aliases and any case


def _jpg(fn, size, col=(200, 20, 20)): Image.new('RGB', size, col).save(fn, 'JPEG'); return fn


def test_a_read_only_class_folder_is_said_before_any_work(tmp_path):
    "A class folder the user cannot write: a raw PermissionError at the first move, after a copy was left in quarantine (again at each rerun)"
    from conftest import read_only
    d = tmp_path/'data'; (d/'a').mkdir(parents=True); (d/'b').mkdir()
    big = _jpg(d/'a'/'big.jpg', (300, 200)); _jpg(d/'b'/'ok.jpg', (50, 50))
    (d/'b'/'bad.jpg').write_bytes(jpeg_bytes((300, 300))[:500])
    with read_only(d/'b') as ro:   # as root: b_ro is b through a read-only mount; else b renamed b_ro, write bits off
        for _ in range(2):
            with pytest.raises(PermissionError, match=f"{ro}: 1 class folder you cannot write. verify_dataset moves"):
                verify_dataset(d, max_size=100, progress=False, verbose=False)
        assert (ro/'bad.jpg').exists() and not (tmp_path/'data_quarantine').exists()
        with Image.open(big) as im: assert im.size == (300, 200)   # nothing done before the error


def test_quarantine_leaves_no_copy_when_the_file_cannot_leave_its_folder(tmp_path):
    "shutil.move fell back to copy + delete on any rename error: the delete failed and the copy stayed in quarantine"
    from conftest import read_only
    from imgclean.images import quarantine_files
    d = tmp_path/'data'; (d/'b').mkdir(parents=True); (d/'b'/'bad.jpg').write_bytes(b'junk')
    q = tmp_path/'q'
    with read_only(d/'b') as ro:
        rows = pd.DataFrame(dict(file=[f'{ro.name}/bad.jpg'], label=[ro.name], reason=['not an image']))
        with pytest.raises(OSError): quarantine_files(d, q, rows)
        assert (ro/'bad.jpg').exists() and not (q/ro.name/'bad.jpg').exists()
        assert len(_report(q)) == 0   # its report row is taken back


def test_a_rewritten_file_keeps_its_permissions(tmp_path):
    "A 0444 image resized in place became 0644"
    d = tmp_path/'data'; (d/'a').mkdir(parents=True)
    fn = _jpg(d/'a'/'ro.jpg', (300, 200)); os.chmod(fn, 0o444)
    df = verify_dataset(d, max_size=100, progress=False, verbose=False)
    assert df.resized.tolist() == [True]
    assert oct(fn.stat().st_mode & 0o777) == '0o444'


def test_a_flat_folder_of_images_is_no_dataset(tmp_path, capsys):
    "verify_dataset on images with no class folder checked nothing and said '0 files checked'"
    d = tmp_path/'flat'; d.mkdir()
    for i in range(3): _jpg(d/f'{i}.jpg', (40, 40))
    with pytest.raises(ValueError, match=r"flat has no class folders: its 3 images \(e.g. 0.jpg\) are directly in it.*verify_images\("):
        verify_dataset(d, progress=False)
    (d/'cats').mkdir(); _jpg(d/'cats'/'x.jpg', (40, 40))   # a class folder and loose images: the loose ones are named as not checked
    df = verify_dataset(d, progress=False)
    assert df.file.tolist() == ['cats/x.jpg'] and f"Not checked: 3 images directly in {d}" in capsys.readouterr().out


def test_the_report_notes_a_deep_greyscale_file_rewritten_as_8_bit(tmp_path):
    "A 16-bit PNG was rewritten in place as 8-bit RGB with an empty note: the report did not say the file lost its depth"
    d = tmp_path/'data'; (d/'a').mkdir(parents=True)
    Image.fromarray((np.random.default_rng(1).random((300, 40))*65535).astype(np.uint16)).save(d/'a'/'tall16.png')
    Image.new('L', (40, 40), 90).save(d/'a'/'grey.png')   # 8-bit greyscale stays as it is: no note
    df = verify_dataset(d, progress=False, verbose=False).set_index('file')
    assert df.note.to_dict() == {'a/grey.png': '', 'a/tall16.png': '16-bit greyscale rewritten as 8-bit RGB'}
    with Image.open(d/'a'/'tall16.png') as im: assert im.mode == 'RGB'


def test_verify_images_recurse_refuses_a_read_only_sub_folder_before_any_work(tmp_path):
    "verify_images(folder, recurse=True) checked only the folder itself: a read-only sub-folder failed at the first move"
    from conftest import read_only
    d = tmp_path/'data'; (d/'b').mkdir(parents=True)
    big = _jpg(d/'big.jpg', (300, 200)); (d/'b'/'bad.jpg').write_bytes(jpeg_bytes((300, 300))[:500])
    with read_only(d/'b') as ro:
        with pytest.raises(PermissionError, match=f"{ro}: 1 folder you cannot write. verify_images\\(folder\\) moves"):
            verify_images(d, recurse=True, max_size=100, progress=False, verbose=False)
        assert (ro/'bad.jpg').exists() and not (tmp_path/'data_quarantine').exists()
        with Image.open(big) as im: assert im.size == (300, 200)


def _files(root): return sorted((str(f.relative_to(root)), f.stat().st_size) for f in root.rglob('*') if f.is_file())

@pytest.mark.parametrize('kw, says', [(dict(max_size=-1), 'max_size=-1 (--max-size -1): pass a whole number, at least 1'),
                                      (dict(max_pixels=0), 'max_pixels=0 (--max-pixels 0)'),
                                      (dict(max_size=1), 'max_size=1 is under min_size=8'),
                                      (dict(quarantine='circle'), 'inside the dataset'),
                                      (dict(quarantine='q'), 'inside the dataset')])
def test_a_policy_that_would_wreck_every_image_is_refused_before_any_work(tmp_path, class_folders, kw, says):
    "max_size=-1 quarantined every image ('internal error'), max_pixels=0 every image as a bomb, max_size=1 shrank all to 1x1, a quarantine in a class kept the failures as items"
    (class_folders/'circle'/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\nbroken')
    kw = dict(kw, quarantine=class_folders/kw['quarantine']) if 'quarantine' in kw else kw
    before = _files(class_folders)
    with pytest.raises(ValueError, match=re.escape(says)): verify_dataset(class_folders, progress=False, n_workers=0, verbose=False, **kw)
    assert _files(class_folders) == before
    if 'quarantine' not in kw and 'min_size' not in says:   # verify_images keeps any size by default, as fastai
        with pytest.raises(ValueError, match=re.escape(says)): verify_images(class_folders/'circle', progress=False, verbose=False, **kw)
    hidden = verify_dataset(class_folders, quarantine=class_folders/'.q', progress=False, n_workers=0, verbose=False)
    assert (class_folders/'.q'/'circle'/'bad.png').exists() and hidden.ok.sum() == len(hidden) - 1


def test_a_quarantine_that_is_a_file_is_said_plainly(tmp_path, class_folders):
    "Before: '[Errno 17] File exists' from deep inside the first move"
    (tmp_path/'q.txt').write_text('notes')
    with pytest.raises(NotADirectoryError, match=r"quarantine=.*q.txt' is a file .*pass a folder"):
        verify_dataset(class_folders, quarantine=tmp_path/'q.txt', progress=False, n_workers=0, verbose=False)
    assert (tmp_path/'q.txt').read_text() == 'notes'
