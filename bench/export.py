"Batch prediction of a folder: imgclean `predict_files` vs fastai's `learn.predict` loop and fastai's `test_dl` + `get_preds`."
import shutil, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
from fastai.data.transforms import get_image_files
from fastai.vision.core import PILImage
from fastai.vision.learner import vision_learner
from torchvision.models import resnet18

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from conftest import make_class_folders  # noqa: E402
from imgclean.data import folder_items, image_dls  # noqa: E402
from imgclean.export import export_learner, load_export, predict_files  # noqa: E402

N, SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 100, 64   # images per class, training size
tmp = Path(tempfile.mkdtemp(prefix='imgclean_bench_export_'))
try:
    root = make_class_folders(tmp/'shapes', n=N, size=96)
    dls = image_dls(root, folder_items(root, valid_pct=0.2), size=SIZE, bs=32, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn = load_export(export_learner(learn, tmp/'export.pkl'))
    files = get_image_files(root); n = len(files)
    (root/'junk').mkdir(); (root/'junk'/'bad.jpg').write_bytes(b'not a jpeg')   # one bad file: ours reports it
    t = time.perf_counter(); df = predict_files(learn, root, bs=64, progress=False); ours = time.perf_counter() - t
    assert (df.status == 'ok').sum() == n and (df.status == 'skipped').sum() == 1
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        for f in files: learn.predict(PILImage.create(f))   # the lesson's way: one image at a time
    loop = time.perf_counter() - t
    # fastai's batch way; a learner trained from a DataFrame needs the getter removed, and it has no answer for
    # bad files (the junk file is left out here, or it would stop the run)
    t = time.perf_counter()
    dl = learn.dls.test_dl(files, rm_type_tfms=1, bs=64, num_workers=0)
    with learn.no_bar(): learn.get_preds(dl=dl)
    batch = time.perf_counter() - t
    print(f"predict images/s ({n} files of 96 px, resnet18 at {SIZE} px, CPU)  imgclean {n/ours:.1f}  "
          f"fastai learn.predict loop {n/loop:.1f}  ratio {loop/ours:.1f}x")
    print(f"predict images/s  imgclean {n/ours:.1f}  fastai test_dl+get_preds {n/batch:.1f}  ratio {batch/ours:.2f}x "
          f"(fastai stops at the first unreadable file; imgclean reports it as a skipped row)")
finally: shutil.rmtree(tmp, ignore_errors=True)
