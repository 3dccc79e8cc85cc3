"""Training in two CPU processes under `accelerate launch` (fastai's distrib_ctx, gloo): the command line, and that the two
processes share the work and end with the same weights."""
import hashlib, json, os, subprocess, sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_class_folders  # noqa: E402

pytest.importorskip('accelerate', reason="the ray extra is not installed (pip install 'imgclean[ray]')")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), 'OMP_NUM_THREADS': '1'}

SCRIPT = """import hashlib, json, sys, warnings, torch
warnings.simplefilter('ignore')
from fastai.torch_core import rank_distrib
from imgclean.data import folder_dls
from imgclean.train import distributed, fine_tune_distributed, make_learner, same_on_every_process
torch.manual_seed(0)
dls = folder_dls(sys.argv[1], size=32, bs=8, num_workers=0, seed=0)
learn = make_learner(dls, 'resnet18', pretrained=False)
lr = same_on_every_process(1e-3 * (1 + rank_distrib()))   # differs per process unless shared
with learn.no_bar(), learn.no_logging(): fine_tune_distributed(learn, lr=lr, epochs=2, strategy='no_freeze', save=False)
w = hashlib.sha1(b''.join(p.detach().numpy().tobytes() for p in learn.model.parameters())).hexdigest()
res = dict(rank=rank_distrib(), distributed=distributed(), lr=lr, iters=len(learn.stage_history['losses']), batches=len(dls.train), weights=w)
open(f'result-{rank_distrib()}.json', 'w').write(json.dumps(res))   # one file a process: their prints can interleave on one line
"""


def launch(n, *args, cwd):
    return subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(n),
                           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', *args],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)


def test_two_processes_share_the_batches_and_end_alike(tmp_path):
    root = make_class_folders(tmp_path/'ds', n=16, size=32)
    (tmp_path/'train.py').write_text(SCRIPT)
    p = launch(2, str(tmp_path/'train.py'), str(root), cwd=tmp_path)
    res = sorted((json.loads(f.read_text()) for f in tmp_path.glob('result-*.json')), key=lambda o: o['rank'])
    assert p.returncode == 0 and len(res) == 2, p.stdout[-2000:] + p.stderr[-3000:]
    assert [r['rank'] for r in res] == [0, 1] and all(r['distributed'] for r in res)
    assert res[0]['lr'] == res[1]['lr'] == 1e-3                     # the first process's value on both
    assert res[0]['weights'] == res[1]['weights']                    # gradients averaged: the same model on both
    assert res[0]['iters'] == 2 * ((res[0]['batches'] + 1) // 2)     # each process ran half of every epoch's batches


def test_imgclean_train_distributed(tmp_path):
    root = make_class_folders(tmp_path/'ds', n=10, size=32)
    p = subprocess.run([sys.executable, '-m', 'imgclean.cli', 'train', str(root), '--arch', 'resnet18', '--size', '32', '--bs', '8',
                        '--no-pretrained', '--epochs', '1', '--distributed', '2', '--workers', '0'],   # --lr find: the README's command
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert 'training in 2 processes' in p.stdout and p.stdout.count('validation accuracy') == 1   # reported once
    assert (root/'export.pkl').is_file() and (root/'models'/'stage-2.pth').is_file()
    bad = subprocess.run([sys.executable, '-m', 'imgclean.cli', 'train', str(root), '--distributed', '2', '--fast-frozen'],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and '--fast-frozen' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    for args, said in ((['--arch', 'nosucharch'], 'nosucharch'), (['--distributed', '0'], '--distributed 0')):   # said once, before any launch
        bad = subprocess.run([sys.executable, '-m', 'imgclean.cli', 'train', str(root), '--distributed', '2', *args],
                             env=ENV, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and said in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr[-2000:]
