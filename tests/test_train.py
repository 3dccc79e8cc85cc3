"Training on few images, the frozen phase on cached features, and DataLoaders whose items are plain file paths."
import contextlib, io, warnings

import numpy as np
import pytest
import torch

from conftest import make_class_folders

CLASSES = ('circle', 'square', 'triangle', 'star')


@pytest.fixture
def few(tmp_path):
    "44 images of 24 px in 4 classes: with valid_pct=0.25, 32 for training, fewer than the default batch of 64"
    return make_class_folders(tmp_path/'few', classes=CLASSES, n=11, size=24)


def quiet(f, *args, **kwargs):
    "(result, stdout) of `f(*args, **kwargs)`, warnings silenced"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*args, **kwargs), out.getvalue()


def test_fastai_alone_cannot_train_on_fewer_images_than_a_batch(few):
    "What the library guards against: fastai's lr_find on such data dies in a ZeroDivisionError"
    from fastai.vision.all import ImageDataLoaders, Resize, resnet18, vision_learner
    dls = ImageDataLoaders.from_folder(few, valid_pct=0.25, seed=0, item_tfms=Resize(24), bs=64, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    assert len(dls.train) == 0
    with pytest.raises(ZeroDivisionError), learn.no_bar(): learn.lr_find(show_plot=False)


def test_library_shrinks_the_batch_to_the_training_images(few):
    from imgclean.data import folder_dls
    from imgclean.train import find_lr, fine_tune_stages, make_learner
    dls, out = quiet(folder_dls, few, valid_pct=0.25, size=24, num_workers=0)      # default bs=64
    assert (len(dls.train_ds), len(dls.valid_ds)) == (32, 12)
    assert out.strip() == 'note: batch size 64 is more than the 32 training images; training with bs=32'
    assert dls.train.bs == 32 and len(dls.train) == 1
    learn = make_learner(dls, 'resnet18', pretrained=False)
    with learn.no_bar(), learn.no_logging():
        lr, out = quiet(find_lr, learn, show_plot=False, num_it=20)
        quiet(fine_tune_stages, learn, epochs=1, lr=lr, save=False)
    assert 1e-5 <= lr <= 1e-1 and 'lr_find suggests' in out
    assert len(learn.stage_history['epochs']) == 1 and len(learn.stage_history['losses']) == 1   # one batch of 32


def test_learner_on_fastai_dataloaders_gets_the_batch_fitted_too(few):
    "DataLoaders made by fastai itself (bs=64 on 32 images): our find_lr and fine_tune_stages shrink the batch"
    from fastai.vision.all import ImageDataLoaders, Resize
    from imgclean.train import find_lr, fine_tune_stages, make_learner
    dls = ImageDataLoaders.from_folder(few, valid_pct=0.25, seed=0, item_tfms=Resize(24), bs=64, num_workers=0)
    learn = make_learner(dls, 'resnet18', pretrained=False)
    with learn.no_bar(), learn.no_logging():
        _, out = quiet(find_lr, learn, show_plot=False, num_it=10)
        quiet(fine_tune_stages, learn, epochs=1, lr=1e-3, save=False)
    assert out.startswith('note: batch size 64 is more than the 33 training images') and dls.train.bs == 33


def test_find_lr_on_a_few_batches_starts_no_worker_processes(few):
    "lr_find runs an epoch per pass over the training batches, each starting the loader's workers again (seconds each): on a 1-batch loader find_lr loads in this process, then leaves the workers as they were"
    from fastai.callback.core import Callback
    from imgclean.data import folder_dls
    from imgclean.train import find_lr, make_learner
    dls, _ = quiet(folder_dls, few, valid_pct=0.25, size=24, num_workers=2)
    seen = []
    class Workers(Callback):
        def before_epoch(self): seen.append(self.dls.train.fake_l.num_workers)
    learn = make_learner(dls, 'resnet18', pretrained=False, cbs=Workers())
    with learn.no_bar(), learn.no_logging(): quiet(find_lr, learn, show_plot=False, num_it=6)
    assert len(seen) >= 3 and set(seen) == {0}, seen
    assert dls.train.fake_l.num_workers == 2   # training afterwards uses them again


def test_one_training_image_is_an_error_that_says_what_to_do(few):
    from imgclean.data import folder_items, image_dls
    items = folder_items(few).groupby('label').head(2).reset_index(drop=True)
    items['is_valid'] = [i != 0 for i in range(len(items))]
    with pytest.raises(ValueError, match='1 training image: training needs at least 2.*valid_pct'): image_dls(few, items, size=24)


def test_dataloaders_items_are_plain_paths(class_folders):
    from imgclean.core import rel_name
    from imgclean.data import csv_items, folder_items, image_dls
    items = folder_items(class_folders)
    dls = image_dls(class_folders, items, size=16, bs=8, num_workers=0)
    for ds, want in ((dls.train_ds, ~items.is_valid), (dls.valid_ds, items.is_valid)):
        assert all(type(o).__name__.endswith('Path') and o.is_absolute() for o in ds.items)
        assert sorted(rel_name(o, class_folders) for o in ds.items) == sorted(items.name[want])
        assert [dls.vocab[int(y)] for _, y in ds] == [o.parent.name for o in ds.items]
    # a relabel in cleaned.csv counts though the file has not moved
    items.loc[items.name == 'circle/000.png', 'label'] = 'square'
    items[['name', 'label']].to_csv(class_folders/'cleaned.csv', index=False)
    dls2 = image_dls(class_folders, csv_items(class_folders), size=16, bs=8, num_workers=0)
    ds = dls2.train_ds if class_folders/'circle/000.png' in dls2.train_ds.items else dls2.valid_ds
    i = ds.items.index(class_folders/'circle/000.png')
    assert dls2.vocab[int(ds[i][1])] == 'square'


def test_fit_head_on_features_is_fastai_fit_one_cycle(class_folders, tmp_path):
    "The head learns through fastai's own fit_one_cycle (OneCycle schedule, Recorder), the body is untouched"
    import torchvision
    from fastai.learner import Learner
    from imgclean.data import folder_dls
    from imgclean.train import fit_head_on_features, make_learner
    wfile = tmp_path/'r18.pth'; torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    dls = folder_dls(class_folders, size=32, bs=8, num_workers=0)
    learn = make_learner(dls, 'resnet18', weights=wfile)
    body0 = {k: v.clone() for k, v in learn.model[0].state_dict().items()}
    seen = []
    orig = Learner.fit_one_cycle
    def spy(self, *a, **kw):
        seen.append(self); return orig(self, *a, **kw)
    Learner.fit_one_cycle = spy
    try: r = fit_head_on_features(learn, epochs=6, lr=1e-2, bs=8)
    finally: Learner.fit_one_cycle = orig
    hl = seen[0]
    assert len(seen) == 1 and hl.model[0] is learn.model[1][2]                    # the head learner trains learn's own head
    lrs = np.array(hl.recorder.lrs)
    assert lrs.argmax() not in (0, len(lrs) - 1) and lrs[0] < lrs.max()/10 and lrs[-1] < lrs[0]   # one cycle: up, then below the start
    assert all(torch.equal(v, learn.model[0].state_dict()[k]) for k, v in body0.items())
    h = r['history']
    assert list(h.columns) == ['epoch', 'train_loss', 'valid_loss', 'valid_accuracy'] and len(h) == 6
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    np.testing.assert_allclose(r['valid_loss'], float(learn.validate()[0]), rtol=1e-4)   # what the full learner now scores


def test_fine_tune_stages_with_head_fit(class_folders, tmp_path):
    import torchvision
    from imgclean.data import folder_dls
    from imgclean.train import fine_tune_stages, fit_head_on_features, make_learner
    wfile = tmp_path/'r18.pth'; torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    learn = make_learner(folder_dls(class_folders, size=32, bs=8, num_workers=0), 'resnet18', weights=wfile)
    with learn.no_bar(), learn.no_logging(): fine_tune_stages(learn, epochs=1, freeze_epochs=3, lr=1e-3, head_fit=fit_head_on_features)
    assert [e['phase'] for e in learn.stage_history['epochs']] == ['frozen (cached features)']*3 + ['unfrozen']
    assert (class_folders/'models'/'stage-1.pth').is_file() and (class_folders/'models'/'stage-2.pth').is_file()


def test_weights_of_another_shape_are_refused_except_the_classifier(tmp_path):
    "Only the final classifier may differ in size: any other mismatch names the tensor (it was dropped silently)"
    import torchvision
    from imgclean.train import WeightsUnavailable, pretrained_model
    sd = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()   # another classifier size: fine
    torch.save(sd, tmp_path/'r18_10.pth')
    m = pretrained_model('resnet18', weights=tmp_path/'r18_10.pth')
    assert torch.equal(m.conv1.weight, sd['conv1.weight']) and m.fc.weight.shape[0] == 1000
    sd['layer1.0.conv1.weight'] = torch.zeros(128, 64, 3, 3)   # same key names, another width (e.g. a wide variant)
    torch.save(sd, tmp_path/'wide.pth')
    with pytest.raises(WeightsUnavailable, match=r'does not fit resnet18: 1 tensors have other shapes, e.g. layer1.0.conv1.weight'):
        pretrained_model('resnet18', weights=tmp_path/'wide.pth')
    del sd['layer1.0.conv1.weight']; torch.save(sd, tmp_path/'short.pth')   # a missing body tensor
    with pytest.raises(WeightsUnavailable, match=r"missing \['layer1.0.conv1.weight'\]"):
        pretrained_model('resnet18', weights=tmp_path/'short.pth')


@pytest.mark.parametrize('arch', ['vit_b_16', 'maxvit_t'])
def test_torchvision_transformers_get_a_clear_error(class_folders, arch):
    "No pooling layer to cut at: a ValueError with what to use instead (it was a bare StopIteration / NotImplementedError)"
    from imgclean.data import folder_dls
    from imgclean.train import make_learner
    dls = folder_dls(class_folders, size=32, bs=8, num_workers=0)
    with pytest.raises(ValueError, match=f"{arch} has no pooling layer.*vit_tiny_patch16_224"):
        make_learner(dls, arch, pretrained=False)


def _timm_hub_cache(root, fill):
    "An HF hub cache under `root` holding (if `fill`) resnet10t's default weights file, with a recognisable fc bias"
    import timm
    from safetensors.torch import save_file
    m = timm.create_model('resnet10t', pretrained=False)
    torch.nn.init.constant_(m.fc.bias, 0.125); torch.nn.init.constant_(m.conv1[0].weight, 0.25)
    if fill:
        d = root/'models--timm--resnet10t.c3_in1k'
        (d/'snapshots'/'abc').mkdir(parents=True); (d/'refs').mkdir()
        (d/'refs'/'main').write_text('abc')
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d/'snapshots'/'abc'/'model.safetensors'))
    return m


@pytest.mark.parametrize('fill', [False, True])
def test_timm_weights_offline_fail_at_once_or_come_from_the_cache(class_folders, tmp_path, monkeypatch, fill):
    "Offline, timm's hub download retried for ~50 s, logging a dozen lines, before it failed (or read the cached file)"
    import httpx2, huggingface_hub.constants
    from imgclean.data import folder_dls
    from imgclean.train import WeightsUnavailable, make_learner, pretrained_model
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path/'hub'))
    calls = []
    def no_network(*args, **kwargs):
        calls.append(args); raise httpx2.ConnectError('no network in this test')
    monkeypatch.setattr(httpx2.Client, 'send', no_network)   # the hub client's every request goes through send
    monkeypatch.setattr('imgclean.train._reachable', lambda url, timeout=3.0: False)
    src = _timm_hub_cache(tmp_path/'hub', fill)
    dls = folder_dls(class_folders, size=32, bs=8, num_workers=0)
    if not fill:
        for f in (lambda: pretrained_model('timm/resnet10t'), lambda: make_learner(dls, 'timm/resnet10t')):
            with pytest.raises(WeightsUnavailable, match=r"not in the Hugging Face cache .*huggingface.co cannot be reached.*pretrained=False"): f()
    else:
        m = pretrained_model('timm/resnet10t')
        assert torch.equal(m.fc.bias, src.fc.bias) and torch.equal(m.conv1[0].weight, src.conv1[0].weight)
        learn = make_learner(dls, 'timm/resnet10t')
        assert torch.equal(learn.model[0].model.conv1[0].weight, src.conv1[0].weight)
    assert calls == []   # no request was even tried


def test_a_learner_on_a_read_only_dataset_saves_beside_it(tmp_path, monkeypatch):
    "Kaggle's input folder: lr_find failed with OSError [Errno 30] making path/'models' for its checkpoint, and export with the same"
    from conftest import read_only
    from fastai.vision.all import resnet18, vision_learner
    from imgclean.data import folder_dls
    from imgclean.export import export_learner, load_export
    from imgclean.train import find_lr, make_learner
    root = make_class_folders(tmp_path/'d', n=6)
    (tmp_path/'work').mkdir(); monkeypatch.chdir(tmp_path/'work')
    with read_only(root) as ro:
        side = tmp_path/'work'/f'{ro.name}_cleaning'
        dls = folder_dls(ro, size=32, bs=4)
        with pytest.warns(UserWarning, match=f"{ro} is read-only: the learner saves its models"): learn = make_learner(dls, 'resnet18', pretrained=False)
        assert learn.path == side
        find_lr(learn, num_it=5)
        assert export_learner(learn) == side/'export.pkl' and load_export(side/'export.pkl') is not None
        theirs = vision_learner(dls, resnet18, pretrained=False)   # fastai's own: its path stays the dataset's
        with pytest.warns(UserWarning, match=f"{ro} is read-only: the export goes to {side/'fastai.pkl'}"):
            assert export_learner(theirs, 'fastai.pkl') == side/'fastai.pkl'
        assert sorted(p.name for p in ro.rglob('*') if p.is_dir()) == ['circle', 'square', 'triangle']


def test_items_from_a_csv_or_by_hand_are_checked_before_fastai_sees_them(class_folders, tmp_path):
    "is_valid read back as 'True'/'False' was an IndexError, no is_valid an AttributeError, a missing file was accepted"
    import pandas as pd
    from imgclean.data import folder_items, image_dls
    items = folder_items(class_folders)
    items.to_csv(tmp_path/'items.csv', index=False)
    as_text = pd.read_csv(tmp_path/'items.csv', dtype=str)
    dls = image_dls(class_folders, as_text, size=16, bs=8, num_workers=0)
    assert (len(dls.train_ds), len(dls.valid_ds)) == ((~items.is_valid).sum(), items.is_valid.sum())
    yes_no = items.assign(is_valid=np.where(items.is_valid, ' Yes', 'no'))
    assert len(image_dls(class_folders, yes_no, size=16, bs=8, num_workers=0).valid_ds) == items.is_valid.sum()
    with pytest.raises(ValueError, match=r"is_valid column holds \['maybe', 'nan'\]: use True/False"):
        image_dls(class_folders, items.assign(is_valid=['maybe', None] * (len(items)//2)), size=16)
    with pytest.raises(ValueError, match=r"no column \['is_valid'\]; their columns are \['name', 'label'\].*stratified_split"):
        image_dls(class_folders, items[['name', 'label']], size=16)
    with pytest.raises(ValueError, match=r"no column \['name'\]; their columns are \['fname', 'label', 'is_valid'\]"):
        image_dls(class_folders, items.rename(columns=dict(name='fname')), size=16)
    extra = pd.DataFrame(dict(name=[f'circle/gone{i}.png' for i in range(5)], label='circle', is_valid=False))
    with pytest.raises(ValueError, match=r"5 of 41 items name files that do not exist under .*shapes, e\.g\. \['circle/gone0.png', 'circle/gone1.png', 'circle/gone2.png'\]; fix"):
        image_dls(class_folders, pd.concat([items, extra], ignore_index=True), size=16)


def test_a_held_out_test_folder_is_never_trained_on(tmp_path):
    "A test folder named other than 'test' (here 'holdout') holding class folders: its images were training and validation items too"
    import pandas as pd
    from imgclean.data import add_test_folder, folder_dls, image_dls
    root = make_class_folders(tmp_path/'ds', n=4, size=24)
    make_class_folders(root/'holdout', n=3, size=24)
    dls = folder_dls(root, test='holdout', size=24, bs=4, num_workers=0)
    names = [str(p) for p in [*dls.train_ds.items, *dls.valid_ds.items]]
    assert len(names) == len(list(root.glob('*/*.png'))) and not [n for n in names if '/holdout/' in n], names
    assert len(dls[2].dataset) == len(list((root/'holdout').glob('*/*.png')))
    items = pd.DataFrame(dict(name=[str(p.relative_to(root)) for p in sorted(root.rglob('*.png'))]))   # a CSV naming the holdout's files too
    items['label'] = [n.split('/')[-2] for n in items.name]; items['is_valid'] = [i % 4 == 0 for i in range(len(items))]
    with pytest.raises(ValueError, match='test set must be held out'): add_test_folder(image_dls(root, items, size=24, bs=4, num_workers=0), root, 'holdout')
