"The `imgclean` command's argument errors and the offline pretrained-weights path, in-process."
import pytest
from PIL import Image

from imgclean import cli, train


def run(capsys, *args):
    "Run the CLI in-process; return (exit code, stdout, stderr)"
    try: cli.main([str(a) for a in args]); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize('args', [
    ('download', '{tmp}/nope', '{tmp}/dest'),           # missing folder
    ('download', '{tmp}/empty', '{tmp}/dest'),          # folder without urls_*.csv
    ('verify', '{tmp}/nope'),
    ('train', '{tmp}/nope', '--no-pretrained'),
    ('train', '{tmp}/shapes', '--arch', 'resnet35', '--no-pretrained'),   # unknown backbone
    ('train', '{tmp}/shapes', '--csv', 'missing.csv', '--no-pretrained'),
    ('predict', '{tmp}/nope.pkl', '{tmp}/shapes'),
    ('audit', '{tmp}/nope'),
    ('audit', '{tmp}/shapes', '--checks', 'labels'),                     # not a check
    ('audit', '{tmp}/shapes', '--epochs', '2'),                          # learner option without --thorough
    ('audit', '{tmp}/shapes', '--flag', 'top5'),                         # not a rule (argparse choices)
])
def test_bad_arguments_give_one_line_errors(capsys, tmp_path, class_folders, args):
    (tmp_path/'empty').mkdir()
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert err.startswith(f'imgclean {args[0]}: error:') and len(err.strip().splitlines()) == 1, err


def test_empty_url_csv_is_an_error(capsys, tmp_path):
    (tmp_path/'urls').mkdir(); (tmp_path/'urls'/'urls_cat.csv').write_text('\n\n')
    code, _, err = run(capsys, 'download', tmp_path/'urls', tmp_path/'dest')
    assert code == 2 and 'error' in err


def test_pretrained_offline_fails_fast_with_advice(capsys, tmp_path, class_folders, monkeypatch):
    import torch
    monkeypatch.setattr(train, '_reachable', lambda url, timeout=3.0: False)   # as on a machine with no internet
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path/'hub'))     # and an empty hub cache
    code, _, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--size', 32, '--lr', '1e-3')
    assert code == 2
    assert 'resnet18' in err and str(tmp_path/'hub'/'checkpoints') in err and '--no-pretrained' in err


def test_audit_offline_advice_is_an_audit_command_line(capsys, tmp_path, class_folders, monkeypatch):
    "The advice for missing weights names options `audit` takes: --no-pretrained alone is refused there"
    import torch
    monkeypatch.setattr(train, '_reachable', lambda url, timeout=3.0: False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path/'hub'))
    code, _, err = run(capsys, 'audit', class_folders, '--arch', 'resnet18', '--size', 32, '--no-progress')
    assert code == 2 and 'resnet18' in err
    advice = err.rsplit('(on the command line:', 1)[1]
    assert '--learner export.pkl' in advice and '--thorough --no-pretrained' in advice
    code, _, err = run(capsys, 'audit', class_folders, '--no-pretrained')   # what the advice must not send a person to
    assert code == 2 and 'only apply with --thorough' in err


def test_train_with_local_weights_file(capsys, tmp_path, class_folders):
    import torch, torchvision
    wfile = tmp_path/'r18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--size', 32, '--bs', 8, '--lr', '1e-3',
                         '--weights', wfile, '--freeze-epochs', 1, '--epochs', 1, '--workers', 0)
    assert code == 0, err
    assert 'validation accuracy' in out and (class_folders/'export.pkl').is_file()
    assert (class_folders/'models'/'stage-1.pth').is_file() and (class_folders/'models'/'stage-2.pth').is_file()


def test_apply_and_undo_from_the_command_line(capsys, class_folders):
    from imgclean.widgets import CleanerState
    st = CleanerState(class_folders); st.delete('circle/000.png'); st.relabel('square/001.png', 'triangle')
    code, out, err = run(capsys, 'apply', class_folders)
    assert code == 0, err
    assert '2 files moved' in out and '--undo' in out
    assert not (class_folders/'circle'/'000.png').exists() and (class_folders/'triangle'/'001.png').exists()
    code, out, err = run(capsys, 'apply', class_folders)          # applied already: nothing more to move
    assert code == 0 and 'nothing to apply' in out, err
    code, out, err = run(capsys, 'apply', class_folders, '--undo')
    assert code == 0 and 'moved 2 files back' in out, err
    assert (class_folders/'circle'/'000.png').exists() and (class_folders/'square'/'001.png').exists()


def test_urls_prints_the_browser_snippet(capsys):
    code, out, _ = run(capsys, 'urls')
    assert code == 0 and 'urls_' in out and 'javascript:' not in out.splitlines()[0]
    code, out, _ = run(capsys, 'urls', '--bookmarklet')
    assert code == 0 and out.startswith('javascript:')


def test_download_and_verify_flags(capsys, tmp_path, class_folders):
    from imgclean.datasets import DemoServer
    with DemoServer(class_folders) as srv:
        (tmp_path/'urls').mkdir()
        (tmp_path/'urls'/'urls_circle.csv').write_text('\n'.join(f'{srv.url}/circle/{i:03d}.png' for i in range(5)) + f'\n{srv.url}/gone.png\n')
        code, out, err = run(capsys, 'download', tmp_path/'urls', tmp_path/'dest', '--max-pics', 3, '--workers', 2,
                             '--per-host', 1, '--retries', 0, '--timeout', 5, '--no-progress')
        small = run(capsys, 'download', tmp_path/'urls', tmp_path/'small', '--max-size', 16, '--retries', 0, '--no-progress')
        raw = run(capsys, 'download', tmp_path/'urls', tmp_path/'raw', '--no-verify', '--retries', 0, '--no-progress')
        both = run(capsys, 'download', tmp_path/'urls', tmp_path/'x', '--no-verify', '--max-size', 16, '--no-progress')
    assert code == 0, err
    assert len(list((tmp_path/'dest'/'circle').iterdir())) == 3
    assert small[0] == 0 and raw[0] == 0, (small[2], raw[2])
    for f in (tmp_path/'small'/'circle').iterdir():
        with Image.open(f) as im: assert max(im.size) == 16                     # resized as it arrived
    assert (tmp_path/'small'/'.imgclean_cache'/'verified.csv').is_file() and not (tmp_path/'raw'/'.imgclean_cache').exists()
    assert sorted(f.read_bytes() for f in (tmp_path/'raw'/'circle').iterdir()) == sorted(f.read_bytes() for f in class_folders.glob('circle/00[0-4].png'))
    assert both[0] == 2 and 'max_size' in both[2]
    (tmp_path/'dest'/'circle'/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0'*40)
    code, out, err = run(capsys, 'verify', tmp_path/'dest', '--workers', 0, '--no-progress', '--no-manifest')
    assert code == 0, err
    assert not (tmp_path/'dest'/'circle'/'bad.png').exists() and (tmp_path/'dest_quarantine'/'circle'/'bad.png').exists()


def test_download_ray_option_chooses_the_engine(capsys, tmp_path, monkeypatch):
    "--ray ADDRESS: engine='ray' at that address; --ray alone: a new local cluster; without it: the local engine"
    import pandas as pd
    from imgclean import download
    seen = []
    monkeypatch.setattr(download, 'download_images', lambda **kw: seen.append(kw) or pd.DataFrame(columns=['status']))
    (tmp_path/'urls').mkdir()
    for extra in (['--ray', 'ray://head:10001'], ['--ray'], ['--ray', 'auto', '--workers', '8'], []):
        code, _, err = run(capsys, 'download', tmp_path/'urls', tmp_path/'dest', *extra)
        assert code == 0, err
    assert [(k.get('engine'), k.get('address', '-')) for k in seen] == [('ray', 'ray://head:10001'), ('ray', None), ('ray', 'auto'), (None, '-')]
    assert seen[2]['n_workers'] == 8
    code, out, _ = run(capsys, 'download', '--help')
    assert '--ray [ADDRESS]' in out and '--engine' not in out


def test_download_on_a_local_ray_cluster_from_the_command_line(capsys, tmp_path, class_folders):
    "`imgclean download URLS DEST --ray` starts a local Ray cluster and gives the files the local engine gives"
    ray = pytest.importorskip('ray', reason="the ray extra is not installed (pip install 'imgclean[ray]')")
    from imgclean.datasets import DemoServer
    assert not ray.is_initialized()
    try:
        with DemoServer(class_folders) as srv:
            (tmp_path/'urls').mkdir()
            for c in ('circle', 'square'):
                (tmp_path/'urls'/f'urls_{c}.csv').write_text('\n'.join(f'{srv.url}/{c}/{i:03d}.png' for i in range(6)) + f'\n{srv.url}/gone.png\n')
            here = run(capsys, 'download', tmp_path/'urls', tmp_path/'here', '--retries', 0, '--no-progress')
            assert not ray.is_initialized()
            there = run(capsys, 'download', tmp_path/'urls', tmp_path/'there', '--ray', '--retries', 0, '--no-progress')
        assert here[0] == 0 and there[0] == 0, (here[2], there[2])
        assert ray.is_initialized()   # the Ray engine ran, on a cluster it started
    finally: ray.shutdown()
    files = lambda root: {f.relative_to(root).as_posix(): f.read_bytes() for f in root.glob('[!._]*/*') if f.is_file()}
    assert len(files(tmp_path/'there')) == 12 and files(tmp_path/'there') == files(tmp_path/'here')
    import pandas as pd
    a, b = (pd.read_csv(tmp_path/d/'manifest.csv').sort_values('url') for d in ('here', 'there'))
    assert a.status.tolist() == b.status.tolist() and a.file.fillna('').tolist() == b.file.fillna('').tolist()


def test_download_with_no_image_is_an_error(capsys, tmp_path):
    from imgclean.datasets import DemoServer
    (tmp_path/'site').mkdir(); (tmp_path/'site'/'page.html').write_text('<html>not an image</html>')
    with DemoServer(tmp_path/'site') as srv:
        (tmp_path/'urls').mkdir(); (tmp_path/'urls'/'urls_cat.csv').write_text(f'{srv.url}/page.html\n{srv.url}/missing.jpg\n')
        code, _, err = run(capsys, 'download', tmp_path/'urls', tmp_path/'dest', '--retries', 0, '--no-progress')
    assert code == 2 and 'manifest.csv' in err, err


@pytest.mark.parametrize('labelled', [True, False])
def test_train_with_explicit_folders_and_a_test_folder(capsys, tmp_path, labelled):
    "Lightning Flash's layout: train/, valid/ and a test/ folder (labelled: a report; flat: predictions.csv)"
    from conftest import make_class_folders
    root = tmp_path/'data'
    make_class_folders(root/'train', n=6); make_class_folders(root/'valid', n=2, seed=50)
    if labelled: make_class_folders(root/'test', n=2, seed=80)
    else:
        (root/'test').mkdir(parents=True)
        for f in make_class_folders(tmp_path/'raw', n=1, seed=80).rglob('*.png'): (root/'test'/f'{f.parent.name}.png').write_bytes(f.read_bytes())
    code, out, err = run(capsys, 'train', root, '--train-folder', 'train', '--valid-folder', 'valid', '--test-folder', 'test',
                         '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8, '--epochs', 1, '--lr', '1e-3', '--workers', 0)
    assert code == 0, err
    assert '24 images' in out
    if labelled:
        assert 'test set (test):' in out
        report = out.split('test set (test):')[1]
        assert 'macro avg' in report and '6' in report     # support of the test rows
    else:
        import pandas as pd
        df = pd.read_csv(root/'predictions.csv')
        assert sorted(df.file_name.map(lambda s: s.rsplit('/', 1)[-1])) == ['circle.png', 'square.png', 'triangle.png']
        assert set(df.prediction) <= {'circle', 'square', 'triangle'}


def test_train_fast_frozen_phase(capsys, tmp_path, class_folders):
    "--fast-frozen: the frozen phase fits the head on cached body features, then the body is unfrozen as usual"
    import torch, torchvision
    from imgclean.export import load_export
    wfile = tmp_path/'r18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--weights', wfile, '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--freeze-epochs', 2, '--epochs', 1, '--workers', 0, '--fast-frozen')
    assert code == 0, err
    learn = load_export(class_folders/'export.pkl')
    phases = [e['phase'] for e in learn.stage_history['epochs']]
    assert phases == ['frozen (cached features)']*2 + ['unfrozen']


def test_audit_flag_choices_follow_the_library():
    from imgclean.audit import FLAG_RULES
    sub = next(a for a in cli._parser()._actions if a.dest == 'cmd').choices['audit']
    assert tuple(next(a for a in sub._actions if a.dest == 'flag').choices) == FLAG_RULES


def test_audit_from_the_command_line(capsys, tmp_path, class_folders):
    "Fast path on a local weights file, then the thorough path from random init: table written, summary printed"
    import torch, torchvision
    from imgclean.core import ISSUE_COLUMNS, read_issues
    wfile = tmp_path/'r18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    (class_folders/'circle'/'copy.png').write_bytes((class_folders/'circle'/'000.png').read_bytes())   # an exact duplicate
    code, out, err = run(capsys, 'audit', class_folders, '--arch', 'resnet18', '--weights', wfile, '--size', 32)
    assert code == 0, err
    df = read_issues(class_folders/'issues.csv')
    per = df[df.file != '']   # rows with file '' describe the dataset ("about N of M labels look wrong")
    assert list(df.columns) == ISSUE_COLUMNS and f"{per.file.nunique()} files with {len(per)} issues" in out and 'labels look wrong' in out
    assert {'circle/000.png', 'circle/copy.png'} <= set(df.file[df.issue == 'exact_duplicate'])
    assert 'issues table: ' + str(class_folders/'issues.csv') in out
    call = out.split('review it in Jupyter: ')[1].splitlines()[0][:-1]          # the call the message names works
    from pathlib import Path
    from imgclean.widgets import ImageCleaner
    cleaner = eval(call, dict(ImageCleaner=ImageCleaner, path=Path(class_folders)))
    assert {'circle/000.png', 'circle/copy.png'} <= set(cleaner.rows.file)
    code, out, err = run(capsys, 'audit', class_folders, '--thorough', '--no-pretrained', '--arch', 'resnet18', '--size', 32,
                         '--folds', 2, '--epochs', 1, '--bs', 8, '--out', tmp_path/'thorough.csv', '--checks', 'label,duplicates')
    assert code == 0, err
    df = read_issues(tmp_path/'thorough.csv')
    assert set(df.issue) <= {'label', 'exact_duplicate', 'near_duplicate'} and 'exact_duplicate' in set(df.issue)
    assert (df.label == df.file.str.split('/').str[0]).all()


def test_help_and_argument_errors_do_not_load_torch(tmp_path):
    "`imgclean --help` and bad arguments answer at once: no torch/fastai import (that takes seconds)"
    import subprocess, sys
    code = ("import sys\nfrom imgclean import cli\n"
            f"for argv in (['--help'], ['train', '--help'], ['audit', '.', '--flag', 'x'], ['train', '.', '--fn-col', 'f'], "
            f"['train', '.', '--lr', 'fast'], ['audit', '.', '--epochs', '2'], ['download', {str(tmp_path/'nope')!r}, {str(tmp_path/'d')!r}]):\n"
            "    try: cli.main(argv)\n    except SystemExit as e: print('exit', e.code)\n"
            "print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [l for l in lines if l.startswith('exit')] == ['exit 0']*2 + ['exit 2']*5 and lines[-1] == '[]', out.stdout[-500:]
    assert 'imgclean train: error: --fn-col only apply with --csv' in out.stderr
    assert "imgclean train: error: argument --lr: 'fast' is neither a number nor 'find'" in out.stderr


def cli_library_mismatches(parser):
    "([(command, flag, function, CLI default, library default)] where they differ, number of defaults compared)"
    import importlib, inspect
    sub = next(a for a in parser._actions if a.dest == 'cmd').choices
    bad, n = [], 0
    for name, cmd in cli.COMMANDS.items():
        acts = {a.dest: a for a in sub[name]._actions}
        for o in cli.options(cmd):
            act = acts[o.name]
            if o.positional: continue
            default = act.const if act.nargs == '?' else act.default    # `--csv` alone means the library's default
            for spec in cmd.sources:
                module, fn = spec.split(':')
                if fn not in o.sources: continue
                lib = inspect.signature(getattr(importlib.import_module(module), fn)).parameters[o.name].default
                n += 1
                if default != lib or type(default) is not type(lib): bad.append((name, act.option_strings[0], fn, default, lib))
    return bad, n


EXTRAS = {('download', 'ray'), ('train', 'lr'), ('train', 'fast_frozen'), ('train', 'distributed'), ('predict', 'top'), ('audit', 'out'), ('audit', 'ray'), ('apply', 'undo')}


def test_every_cli_default_is_the_library_default():
    "Each option's default is read from the library function it goes to; a default set in the CLI alone fails this test"
    p = cli._parser()
    bad, n = cli_library_mismatches(p)
    assert bad == [] and n > 100, (bad, n)
    # every option is a library parameter, but the few command-line-only ones listed here
    sub = next(a for a in p._actions if a.dest == 'cmd').choices
    extra = {(name, a.dest) for name, cmd in cli.COMMANDS.items() for a in sub[name]._actions
             if a.dest != 'help' and a.dest not in {o.name for o in cli.options(cmd)}}
    assert extra == EXTRAS
    # and the check can fail: a default changed on the CLI side only is caught
    act = next(a for a in sub['train']._actions if a.dest == 'bs')
    act.default = 32
    assert cli_library_mismatches(p)[0] == [('train', '--bs', 'image_dls', 32, 64)]


def test_shared_options_agree_in_every_function():
    "An option passed to two functions (train's --seed, serve's --max-batch) has one default in both"
    shared = [(name, o.name, o.sources) for name, cmd in cli.COMMANDS.items() for o in cli.options(cmd) if len(o.sources) > 1]
    assert ('serve', 'max_batch', ['serve', 'make_app']) in shared and ('train', 'seed', ['folder_dls', 'csv_items']) in shared
    assert cli_library_mismatches(cli._parser())[0] == []   # compares against each of the functions


def test_a_new_library_parameter_appears_on_the_command_line(tmp_path, monkeypatch, capsys):
    "A parameter added to a stage function is an option at once: no CLI edit (types, booleans, lists, docments as help)"
    (tmp_path/'fake_stage.py').write_text("""
LIMIT = 7
def grab(path,              # Where to grab
         n_workers:int=8,   # Threads
         fast:bool=True,    # Go fast
         tags=('a', 'b'),   # Tags to grab
         limit:int=LIMIT,   # At most this many
         ratio:float=0.5,   # A fraction
         frame:dict=None,   # Not for the command line
         resample=object(), # Not a literal: not offered
        ):
    "Grab the things at `path`"
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    monkeypatch.setitem(cli.COMMANDS, 'grab', cli.Command(lambda a: seen.append(cli.kwargs_for(a, 'grab')), 'fake_stage:grab'))
    cli.main(['grab', 'here', '--workers', '3', '--no-fast', '--tags', 'x,y', '--ratio', '0.25'])
    cli.main(['grab', 'there'])
    assert seen == [dict(path='here', n_workers=3, fast=False, tags=('x', 'y'), ratio=0.25), dict(path='there')]
    code, out, _ = run(capsys, 'grab', '--help')
    assert code == 0 and 'Grab the things at `path`' in out and '--limit LIMIT' in out and 'At most this many (default: 7)' in out
    assert '--frame' not in out and '--resample' not in out and '--fast, --no-fast' in out


def test_train_on_fewer_images_than_a_batch(capsys, tmp_path):
    "44 images (32 for training) with the default --bs 64: the batch shrinks with a one-line note, lr_find runs"
    from conftest import make_class_folders
    root = make_class_folders(tmp_path/'few', classes=('circle', 'square', 'triangle', 'star'), n=11, size=24)
    code, out, err = run(capsys, 'train', root, '--valid-pct', 0.25, '--arch', 'resnet18', '--no-pretrained', '--size', 24,
                         '--epochs', 1, '--workers', 0)
    assert code == 0, err
    assert '44 images, 4 classes, 12 for validation' in out
    assert [l for l in out.splitlines() if l.startswith('note:')] == ['note: batch size 64 is more than the 32 training images; training with bs=32']
    assert 'lr_find suggests' in out and (root/'export.pkl').is_file()


def test_train_on_one_training_image_is_a_one_line_error(capsys, tmp_path):
    "With one training image of two classes, the other class is only in validation: that is the error, on one line"
    from conftest import make_class_folders
    import pandas as pd
    root = make_class_folders(tmp_path/'one', n=2, size=24)
    pd.DataFrame(dict(name=['circle/000.png', 'square/000.png', 'square/001.png'], label=['circle', 'square', 'square'],
                      split=['train', 'valid', 'valid'])).to_csv(root/'labels.csv', index=False)
    code, _, err = run(capsys, 'train', root, '--csv', 'labels.csv', '--valid-col', 'split', '--arch', 'resnet18', '--no-pretrained')
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("imgclean train: error: labels.csv (its validation rows) has classes with no training images: ['square']")


def test_csv_alone_means_cleaned_csv(capsys, class_folders):
    "--csv without a value reads the library's default labels file, cleaned.csv"
    from imgclean.data import folder_items
    folder_items(class_folders).iloc[3:][['name', 'label']].to_csv(class_folders/'cleaned.csv', index=False)
    a = cli._parser().parse_args(['train', str(class_folders), '--csv'])
    assert a.csv == 'cleaned.csv' and cli.kwargs_for(a, 'csv_items') == dict(path=str(class_folders))   # the library's default applies
    assert cli._parser().parse_args(['train', str(class_folders)]).csv is None


def test_download_to_an_fsspec_url_from_the_command_line(capsys, tmp_path, class_folders, monkeypatch):
    "`imgclean download URLS file://DEST` stages, uploads and gives the files a folder gets; an unknown protocol, a missing backend, an unwritable place: usage errors"
    from imgclean.datasets import DemoServer
    with DemoServer(class_folders) as srv:
        (tmp_path/'urls').mkdir()
        (tmp_path/'urls'/'urls_circle.csv').write_text('\n'.join(f'{srv.url}/circle/{i:03d}.png' for i in range(4)) + f'\n{srv.url}/gone.png\n')
        here = run(capsys, 'download', tmp_path/'urls', tmp_path/'here', '--retries', 0, '--no-progress')
        there = run(capsys, 'download', tmp_path/'urls', f'file://{tmp_path}/there', '--retries', 0, '--no-progress')
        bad = run(capsys, 'download', tmp_path/'urls', 'nosuchproto://b/x', '--retries', 0, '--no-progress')
        import fsspec, imgclean.download as dl
        def refuse(self, data): raise OSError(13, 'Permission denied')   # as a read-only bucket answers (root writes any local folder)
        with monkeypatch.context() as m:
            m.setattr(dl._FsPath, 'write_bytes', refuse)
            ro = run(capsys, 'download', tmp_path/'urls', f'file://{tmp_path}/ro', '--retries', 0, '--no-progress')
        real = fsspec.get_filesystem_class
        def no_s3(proto):
            if proto == 's3': raise ImportError("Install s3fs to access S3")
            return real(proto)
        monkeypatch.setattr(fsspec, 'get_filesystem_class', no_s3)
        s3 = run(capsys, 'download', tmp_path/'urls', 's3://bucket/x', '--retries', 0, '--no-progress')
    assert here[0] == 0 and there[0] == 0, there[2]
    files = lambda root: {f.relative_to(root).as_posix(): f.read_bytes() for f in root.glob('[!._]*/*') if f.is_file()}
    assert len(files(tmp_path/'there')) == 4 and files(tmp_path/'there') == files(tmp_path/'here')
    assert (tmp_path/'there'/'manifest.csv').read_text() == (tmp_path/'here'/'manifest.csv').read_text()
    assert bad[0] == 2 and 'fsspec knows no protocol nosuchproto://' in bad[2], bad
    assert s3[0] == 2 and 'pip install s3fs' in s3[2] and 'Traceback' not in s3[2], s3   # one line saying what to install
    assert ro[0] == 2 and 'cannot write to' in ro[2] and 'Traceback' not in ro[2], ro


def test_report_on_an_export_from_the_command_line(capsys, tmp_path, class_folders):
    "`imgclean report EXPORT PATH` prints the classification report (it passed `learn` twice)"
    from imgclean.data import folder_dls
    from imgclean.export import export_learner
    learn = train.make_learner(folder_dls(class_folders, size=32, bs=8, num_workers=0), 'resnet18', pretrained=False)
    fn = export_learner(learn, tmp_path/'export.pkl')
    code, out, err = run(capsys, 'report', fn, class_folders)
    assert code == 0, err
    assert 'precision' in out and 'circle' in out and 'triangle' in out


def test_predict_max_pixels_from_the_command_line(capsys, tmp_path, class_folders):
    "A picture over the bomb guard is skipped with advice the command line can follow (--max-pixels: it had no such option)"
    from imgclean.data import folder_dls
    from imgclean.export import export_learner
    learn = train.make_learner(folder_dls(class_folders, size=32, bs=8, num_workers=0), 'resnet18', pretrained=False)
    fn = export_learner(learn, tmp_path/'export.pkl')
    big = tmp_path/'big.png'; Image.new('RGB', (120, 100), 'red').save(big)      # 12,000 pixels
    code, out, err = run(capsys, 'predict', fn, big, '--max-pixels', 10_000)
    assert code == 2 and 'over max_pixels 10,000' in err and '--max-pixels' in err, (code, err)
    code, out, err = run(capsys, 'predict', fn, big, tmp_path/'export.pkl', '--max-pixels', 10_000)   # the table form
    assert code == 0 and 'skipped' in out and '--max-pixels' in out, (code, out, err)
    code, out, err = run(capsys, 'predict', fn, big, '--max-pixels', 20_000)
    assert code == 0 and len(out.strip().splitlines()) == 3, (code, out, err)      # one line per class
    code, out, err = run(capsys, 'report', fn, class_folders, '--max-pixels', 100)  # every 32 px picture is over 100 pixels
    assert code == 2 and 'could be read' in err and '--max-pixels' in err, (code, err)   # and why


def test_train_without_a_validation_set_still_exports(capsys, class_folders):
    "--valid-pct 0 trains, skips the validation report with a note and writes export.pkl (it failed at the report, no export)"
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--epochs', 1, '--valid-pct', 0, '--no-save', '--workers', 0)
    assert code == 0, err
    assert 'no validation set' in out and (class_folders/'export.pkl').is_file()


def test_patience_without_a_validation_set_is_refused_up_front(capsys, class_folders):
    "Early stopping needs a validation loss: a one-line error before any epoch (it crashed in SaveModelCallback)"
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--epochs', 2, '--valid-pct', 0, '--patience', 1, '--workers', 0)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'patience' in err and 'no validation set' in err


def test_train_refuses_files_that_cannot_be_opened_before_training(capsys, class_folders):
    "Unreadable files are listed up front with the verify hint (training ran, then died in a DataLoader worker)"
    (class_folders/'triangle'/'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0garbage'*10)
    (class_folders/'circle'/'empty.png').write_bytes(b'')
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--epochs', 1, '--no-save')
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert '2 of 38 files cannot be read' in err and 'corrupt.jpg' in err and 'empty.png' in err
    assert f'imgclean verify {class_folders}' in err and 'Epoch' not in out + err


def test_train_on_a_file_damaged_past_its_header_is_a_one_line_error(capsys, class_folders):
    "A truncated PNG opens but fails to decode during the fit: one line with the verify hint, not a worker traceback"
    good = (class_folders/'square'/'000.png').read_bytes()
    (class_folders/'square'/'truncated.png').write_bytes(good[:len(good)//2])
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--epochs', 1, '--no-save', '--workers', 1)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'could not be decoded' in err and 'truncated.png' in err and f'imgclean verify {class_folders}' in err


@pytest.mark.parametrize('args', [('--size', 0), ('--size', -5), ('--bs', 0)])
def test_train_size_and_batch_below_one_are_argument_errors(capsys, class_folders, args):
    "Refused before training with one line (a ZeroDivisionError traceback from fastai before)"
    code, out, err = run(capsys, 'train', class_folders, '--arch', 'resnet18', '--no-pretrained', '--size', 32, '--bs', 8,
                         '--lr', '1e-3', '--epochs', 1, '--no-save', '--workers', 0, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{args[0][2:]}={args[1]}" in err and 'at least 1' in err


@pytest.mark.parametrize('content', [b'', b'just some text\n', None])   # None: an image
def test_audit_learner_that_is_no_pickle_is_a_one_line_error(capsys, tmp_path, class_folders, content):
    "--learner pointing at an image or a text file crashed with a traceback, exit 1"
    fn = tmp_path/'model.pkl'
    if content is None: fn = class_folders/'circle'/'000.png'
    else: fn.write_bytes(content)
    code, _, err = run(capsys, 'audit', class_folders, '--learner', fn, '--no-progress')
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'does not hold an exported fastai Learner' in err, err


def test_audit_hint_names_an_issues_table_outside_the_dataset(capsys, tmp_path, class_folders):
    "--out outside the dataset: the hint said ImageCleaner(path, issues=path/'x.csv'), a file that is not there"
    out = tmp_path/'elsewhere'/'x.csv'; out.parent.mkdir()
    code, text, err = run(capsys, 'audit', class_folders, '--checks', 'quality', '--out', out, '--no-progress')
    assert code == 0, err
    assert f"ImageCleaner(path, issues={str(out)!r}, mode='all')" in text, text
    code, text, err = run(capsys, 'audit', class_folders, '--checks', 'quality', '--out', 'sub/y.csv', '--no-progress')
    assert "ImageCleaner(path, issues=path/'sub/y.csv', mode='all')" in text, text


def test_audit_of_a_read_only_dataset_from_the_command_line(capsys, tmp_path, class_folders, monkeypatch):
    "A read-only dataset: the command failed writing PATH/issues.csv; it goes beside it now, and the hint names where"
    from conftest import read_only
    (tmp_path/'work').mkdir(); monkeypatch.chdir(tmp_path/'work')
    with read_only(class_folders) as ro:
        code, text, err = run(capsys, 'audit', ro, '--checks', 'quality', '--no-progress')
        out = tmp_path/'work'/f'{ro.name}_cleaning'/'issues.csv'
        assert code == 0 and out.is_file(), err
        assert f"ImageCleaner(path, issues={str(out)!r}, mode='all')" in text, text


def test_ray_option_is_the_same_for_download_and_audit(tmp_path):
    "audit took --engine ray --address ADDR where download takes --ray [ADDRESS]"
    p = cli._parser()
    for cmd, fn in (('download', 'download_images'), ('audit', 'audit')):
        args = [cmd, str(tmp_path)] + ([str(tmp_path/'d')] if cmd == 'download' else [])
        for extra, want in (([], {}), (['--ray'], dict(engine='ray', address=None)), (['--ray', 'auto'], dict(engine='ray', address='auto'))):
            a = p.parse_args(args + extra)
            kw = cli._engine(cli.kwargs_for(a, fn), a.ray)
            assert {k: kw[k] for k in ('engine', 'address') if k in kw} == want, (cmd, extra, kw)


def test_readme_synopsis_lists_every_flag_rule():
    from pathlib import Path
    from imgclean.audit import FLAG_RULES
    assert f"[--flag {'|'.join(FLAG_RULES)}]" in (Path(__file__).parents[1]/'README.md').read_text()


def test_audit_of_a_relative_dataset_path_writes_where_it_says(capsys, tmp_path, class_folders, monkeypatch):
    "`imgclean audit ds` wrote ds/ds/issues.csv and said ds/issues.csv: the cleaner's hint then found nothing"
    monkeypatch.chdir(class_folders.parent)
    code, text, err = run(capsys, 'audit', class_folders.name, '--checks', 'quality', '--no-progress')
    assert code == 0, err
    assert (class_folders/'issues.csv').is_file() and not (class_folders/class_folders.name).exists()
    assert f"issues table: {class_folders/'issues.csv'}" in text


def test_a_misspelt_backbone_is_said_before_the_dataset_is_read(capsys, tmp_path, monkeypatch):
    "Each close name once (torchvision's and timm's overlap), and no dataset is read for a name that cannot train"
    from imgclean import data
    read = []
    monkeypatch.setattr(data, 'folder_dls', lambda *a, **k: read.append(1))
    code, _, err = run(capsys, 'train', tmp_path/'nope', '--arch', 'resnet999', '--no-pretrained')
    assert code == 2 and 'unknown backbone' in err and not read, err
    close = err.split('did you mean ', 1)[1].split('?')[0].split(', ')
    assert close and len(close) == len(set(close)), close


def test_formats_none_keeps_every_format_and_a_misspelt_format_is_an_argument_error(capsys, tmp_path, class_folders):
    "`--formats None` (the help's 'every format Pillow reads') quarantined every image as format 'None'; `--formats bogus` was accepted"
    Image.new('RGB', (32, 32), 'red').save(class_folders/'circle'/'odd.tga')   # a format outside WEB_FORMATS
    code, _, err = run(capsys, 'verify', class_folders, '--formats', 'None', '--workers', 0, '--no-progress')
    assert code == 0, err
    assert len(list((class_folders/'circle').iterdir())) == 13 and not (tmp_path/'shapes_quarantine').exists()   # the TGA too
    for args in (('verify', class_folders), ('download', tmp_path/'urls', tmp_path/'dest')):
        code, _, err = run(capsys, *args, '--formats', 'jpg,bogus', '--no-progress')
        assert code == 2 and "argument --formats: unknown image format 'bogus'; use names among" in err and 'png' in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_verify_of_a_flat_folder_is_an_error_that_says_where_to_go(capsys, tmp_path):
    "`imgclean verify` on a folder of images (no class folders) said '0 files checked' and exited 0"
    (tmp_path/'flat').mkdir()
    for i in range(2): Image.new('RGB', (32, 32), 'red').save(tmp_path/'flat'/f'{i}.png')
    code, _, err = run(capsys, 'verify', tmp_path/'flat', '--no-progress')
    assert code == 2 and 'has no class folders: its 2 images (e.g. 0.png) are directly in it' in err and 'Move them into a folder' in err, err

def test_predict_out_never_overwrites_a_file_that_is_no_predictions_table(capsys, tmp_path, class_folders):
    "`imgclean predict --out export.pkl` replaced the model with a CSV (and --out an image turned it into text); --bs 0 was a ZeroDivisionError"
    from imgclean.data import folder_dls
    from imgclean.export import export_learner
    learn = train.make_learner(folder_dls(class_folders, size=32, bs=8, num_workers=0), 'resnet18', pretrained=False)
    fn = export_learner(learn, tmp_path/'export.pkl')
    model, img = fn.read_bytes(), next((class_folders/'circle').iterdir())
    for target in (fn, img):
        before = target.read_bytes()
        code, out, err = run(capsys, 'predict', fn, class_folders, '--out', target)
        assert code == 2 and 'is not a predictions table' in err and len(err.strip().splitlines()) == 1, (code, err)
        assert target.read_bytes() == before
    code, out, err = run(capsys, 'predict', fn, class_folders, '--out', tmp_path/'p.csv')
    assert code == 0 and (tmp_path/'p.csv').read_text().startswith('file_name,prediction,probability'), (code, err)
    code, out, err = run(capsys, 'predict', fn, img, '--out', tmp_path/'p.csv')   # a table of ours is replaced
    assert code == 0 and len((tmp_path/'p.csv').read_text().splitlines()) == 2, (code, err)
    for cmd in ('predict', 'report'):
        code, out, err = run(capsys, cmd, fn, class_folders, '--bs', 0)
        assert code == 2 and 'bs=0 (--bs): pass a whole number, at least 1' in err and len(err.strip().splitlines()) == 1, (cmd, code, err)
    assert fn.read_bytes() == model


def test_none_is_a_value_where_the_help_says_what_none_means(capsys, tmp_path, class_folders):
    "`--max-size None` (help: 'None keeps sizes') was 'invalid int value'; an option whose help gives None no meaning still refuses it"
    code, out, err = run(capsys, 'verify', class_folders, '--max-size', 'None', '--no-progress')
    assert code == 0 and 'files checked' in out and 'resized' in out, (code, err)
    code, out, err = run(capsys, 'verify', class_folders, '--max-size', 'abc', '--no-progress')
    assert code == 2 and "invalid int value: 'abc'" in err, err
    code, out, err = run(capsys, 'verify', class_folders, '--min-size', 'None', '--no-progress')
    assert code == 2 and "invalid int value: 'None'" in err, err


def test_an_empty_path_argument_is_refused(capsys, tmp_path):
    "`imgclean train \"$DATA\"` with DATA unset trained on the working folder; `download urls ''` said 'see /manifest.csv'"
    for args in (('train', ''), ('verify', ' '), ('download', tmp_path, ''), ('predict', tmp_path/'export.pkl', '')):
        code, out, err = run(capsys, *args)
        assert code == 2 and 'is empty; pass a path' in err and len(err.strip().splitlines()) <= 3, (args, code, err)


def test_apply_after_an_interrupted_undo_is_a_one_line_error_naming_the_command(capsys, class_folders):
    "tryG/11: the log left 'undoing' by a killed undo; `imgclean apply` says to run `imgclean apply DEST --undo`, no traceback"
    import json
    from imgclean.widgets import APPLY_LOG, CleanerState, apply_cleaning
    CleanerState(class_folders).delete('circle/000.png'); apply_cleaning(class_folders)
    log = class_folders/APPLY_LOG; d = json.loads(log.read_text()); d['status'] = 'undoing'; log.write_text(json.dumps(d))
    code, out, err = run(capsys, 'apply', class_folders)
    assert code == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert f"run `imgclean apply {class_folders} --undo` again" in err
    code, out, err = run(capsys, 'apply', class_folders, '--undo')
    assert code == 0 and 'moved 1 files back' in out, err


def test_a_diverged_training_never_replaces_an_export(capsys, tmp_path):
    "`imgclean train --lr nan` (or a far too high rate) replaced a good export.pkl with a model that predicts NaN, exit 0"
    from conftest import make_class_folders
    root = make_class_folders(tmp_path/'ds', n=6, size=24)
    (root/'export.pkl').write_bytes(b'the export that works')
    base = ('train', root, '--arch', 'resnet18', '--no-pretrained', '--size', 24, '--epochs', 1, '--workers', 0)
    for lr in ('nan', '0', '-1'):
        code, out, err = run(capsys, *base, '--lr', lr)
        assert code == 2 and 'a learning rate is a number above 0' in err, (lr, code, err)
    code, out, err = run(capsys, *base, '--lr', '1e30')
    assert code == 2 and 'training diverged' in err and 'nothing was exported' in err, (code, out[-500:], err)
    assert (root/'export.pkl').read_bytes() == b'the export that works'
    from imgclean.train import fine_tune_stages
    with pytest.raises(ValueError, match='epochs=-1'): fine_tune_stages(None, epochs=-1, lr=1e-3, strategy='no_freeze')
    with pytest.raises(ValueError, match=r'lr=nan \(--lr\)'): fine_tune_stages(None, lr=float('nan'), strategy='no_freeze')
