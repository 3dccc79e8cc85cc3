"Tiny trained learners on generated shapes for the interpret/export tests (built once per test session)."
import atexit, functools, shutil, tempfile, warnings
from pathlib import Path

from conftest import make_class_folders


@functools.lru_cache(maxsize=None)
def tiny_learner(epochs=1, size=32, n=10, seed=0):
    "(learn, root, items): resnet18 from scratch on 3 classes x `n` drawn shapes of `size` px, trained `epochs` epochs"
    import fastai.callback.progress  # noqa: F401 (patches Learner.no_bar)
    from fastai.torch_core import set_seed
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18
    from imgclean.data import folder_items, image_dls
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_export_'))
    atexit.register(shutil.rmtree, tmp, True)  # our own temp folder
    root = make_class_folders(tmp/'shapes', n=n, size=size, seed=seed)
    items = folder_items(root, valid_pct=0.3, seed=seed)
    set_seed(seed, reproducible=True)
    dls = image_dls(root, items, size=size, bs=8, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = vision_learner(dls, resnet18, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 2e-3)
    return learn, root, items


def write_bad_files(folder):
    "A text file, a truncated PNG, an empty .jpg and a hidden file in `folder`; returns their names (hidden excluded)"
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    good = next(folder.parent.rglob('*.png')).read_bytes() if any(folder.parent.rglob('*.png')) else b''
    (folder/'notes.txt').write_text('not an image')
    (folder/'truncated.png').write_bytes(good[:len(good)//3] if good else b'\x89PNG\r\n\x1a\n')
    (folder/'empty.jpg').write_bytes(b'')
    (folder/'.DS_Store').write_bytes(b'\0\0')
    return {'notes.txt', 'truncated.png', 'empty.jpg'}


@functools.lru_cache(maxsize=None)
def tiny_bw_learner(n=6, size=32, seed=0):
    "(learn, root): a greyscale learner as fastai's MNIST recipe builds it (`ImageBlock(cls=PILImageBW)`, `n_in=1`), resnet18 from scratch"
    import fastai.callback.progress  # noqa: F401 (patches Learner.no_bar)
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import RandomSplitter, get_image_files, parent_label
    from fastai.torch_core import set_seed
    from fastai.vision.core import PILImageBW
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18
    tmp = Path(tempfile.mkdtemp(prefix='imgclean_bw_'))
    atexit.register(shutil.rmtree, tmp, True)  # our own temp folder
    root = make_class_folders(tmp/'shapes', n=n, size=size, seed=seed)
    set_seed(seed, reproducible=True)
    dls = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.3, seed=seed), item_tfms=Resize(size)).dataloaders(root, bs=6, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = vision_learner(dls, resnet18, pretrained=False, n_in=1)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return learn, root
