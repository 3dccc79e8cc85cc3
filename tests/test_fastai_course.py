"""The fastai course's lesson code with `from imgclean.all import *` in place of fastai's imports.

Each test walks one public lesson notebook's code path, its calls written out here (not pasted): the book's chapter 2
(02_production: the bear classifier), the 2022 course's lesson 1 (00-is-it-a-bird) and lesson 2
(02-saving-a-basic-fastai-model and the bear app's load-and-predict), and fastai v1's lesson2-download. What had to
change, and only that: image searches (DuckDuckGo, Bing) become URL lists served on 127.0.0.1, `untar_data(PETS)`
becomes a download of pet-named files, there are no pretrained weights here (`pretrained=False`), images are 48 px,
one epoch, `lr_find` 10 steps, and `bs=8, num_workers=0` for a few dozen images. fastai v1's data API (`ImageDataBunch`, `ImageList`,
`open_image`) is gone from fastai v2 itself; its v2 equivalents stand in.

Each test asserts what the lesson expects to happen: files downloaded (none lost to a second call into the same
folder), failures returned and left in place (or moved aside, for v1's `delete=True`), `cleaned.csv` written and
readable by fastai, a learner trained, exported, loaded and predicting."""
import io, shutil, zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from imgclean.datasets import DemoServer, draw_shape

SZ = 48          # the lessons use 128-224 px
pytestmark = pytest.mark.timeout(900)


def _bytes(img, fmt, **kw):
    b = io.BytesIO(); img.save(b, format=fmt, **kw); return b.getvalue()


class Site:
    "Drawn images per search term, served on 127.0.0.1; `urls(term)` is what a search would return"
    def __init__(self, root):
        self.root, self.lists, self.good = root, {}, {}
        (root/'img').mkdir(parents=True)
        self.server = DemoServer(root).start()

    def _put(self, name, data):
        (self.root/'img'/name).write_bytes(data)
        return f'{self.server.url}/img/{name}'

    def add(self, term, shape, n, names=None, faults=True, big=0, dup=False):
        "`n` good images of `shape` (named `names`), then `big` 600-px JPEGs, a re-encoded copy, and three bad URLs"
        stem = term.replace(' ', '_')
        urls = []
        for i in range(n):
            name = names[i] if names else f'{stem}_{i}.{"jpg" if i % 2 else "png"}'
            img = draw_shape(shape, SZ, seed=zlib.crc32(name.encode()))
            urls.append(self._put(name, _bytes(img, 'JPEG' if name.endswith('.jpg') else 'PNG')))
        for i in range(big):
            urls.append(self._put(f'{stem}_big{i}.jpg', _bytes(draw_shape(shape, 600, seed=i), 'JPEG')))
        if dup:   # a near duplicate of the first image: the same picture re-encoded, as a search often returns
            first = Image.open(self.root/'img'/urls[0].rsplit('/', 1)[1]).convert('RGB')
            urls.append(self._put(f'{stem}_copy.jpg', _bytes(first, 'JPEG', quality=70)))
        self.good[term] = len(urls)
        if faults:
            jpg = _bytes(draw_shape(shape, SZ, seed=99), 'JPEG')
            urls.append(self._put(f'{stem}_truncated.jpg', jpg[:len(jpg)//2]))
            urls.append(self._put(f'{stem}_page.jpg', b'<!doctype html><html><body>Not an image</body></html>'))
            urls.append(f'{self.server.url}/img/{stem}_gone.jpg')
        self.lists[term] = urls
        return urls

    def urls(self, term): return list(self.lists[term])


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path/'site')
    yield s
    s.server.stop()


@pytest.fixture
def notebook(monkeypatch):
    "What Jupyter gives the lesson's code: IPython's `display` as a builtin (fastai's cleaner calls it)"
    import builtins
    from IPython.display import display
    monkeypatch.setattr(builtins, 'display', display, raising=False)


@pytest.fixture
def lesson_dir(tmp_path, monkeypatch, notebook):
    "The lesson's working folder (the notebooks use relative paths), in a notebook-like session"
    d = tmp_path/'lesson'; d.mkdir()
    monkeypatch.chdir(d)
    return d


def undecodable(fns):
    "The files of `fns` that PIL cannot decode fully"
    bad = []
    for f in fns:
        try:
            with Image.open(f) as im: im.load()
        except Exception: bad.append(f)
    return bad


def downloaded_as(folder, served):
    "The name (relative to `folder`'s parent) of the file in `folder` whose pixels are closest to the served file's"
    import numpy as np
    want = np.asarray(Image.open(served).convert('RGB').resize((SZ, SZ)), dtype=float)
    diff = {f: np.abs(np.asarray(Image.open(f).convert('RGB').resize((SZ, SZ)), dtype=float) - want).mean()
            for f in folder.iterdir() if f.suffix.lower() in ('.jpg', '.jpeg', '.png')}
    return f'{folder.name}/{min(diff, key=diff.get).name}'


def truncated_copy(dest):
    "A broken JPEG put into `dest` by hand, as a user copying files in would"
    jpg = _bytes(draw_shape('circle', SZ, seed=7), 'JPEG')
    fn = dest/'copied_by_hand.jpg'; fn.write_bytes(jpg[:len(jpg)//2])
    return fn


def test_fastai_vision_all_names_unchanged():
    "Every name the lesson's imports give is bound by imgclean.all to fastai's own object, bar the documented extensions"
    import imgclean.all
    assert set(imgclean.all.FASTAI_EXTENSIONS) == {'download_images', 'verify_images'}
    assert imgclean.all.fastai_differences() == {}


def test_course22_lesson1_is_it_a_bird(site, lesson_dir):
    from fastdownload import download_url
    ns = {}
    exec('from imgclean.all import *', ns)
    L, Path, Image_ = ns['L'], ns['Path'], ns['Image']
    for o, shape in (('bird', 'star'), ('forest', 'square')):
        for q in ('photos', 'photo', 'sun photo', 'shade photo'): site.add(f'{o} {q}', shape, 4)
    def search_images(term, max_images=200): return L(site.urls(term))[:max_images]   # in place of DuckDuckGo

    urls = search_images('bird photos', max_images=1)
    download_url(urls[0], 'bird.jpg', show_progress=False)
    Image_.open('bird.jpg').to_thumb(256, 256)
    download_url(search_images('forest photos', max_images=1)[0], 'forest.jpg', show_progress=False)

    download_images, resize_images = ns['download_images'], ns['resize_images']
    searches = 'forest', 'bird'
    path = Path('bird_or_not')
    for o in searches:
        dest = (path/o)
        dest.mkdir(exist_ok=True, parents=True)
        download_images(dest, urls=search_images(f'{o} photo'))
        download_images(dest, urls=search_images(f'{o} sun photo'))
        download_images(dest, urls=search_images(f'{o} shade photo'))
        resize_images(path/o, max_size=400, dest=path/o)
    get_image_files, verify_images = ns['get_image_files'], ns['verify_images']
    for o in searches:   # three calls into one folder: every good image of each kept, nothing overwritten
        assert len(get_image_files(path/o)) == 3*4, sorted(p.name for p in (path/o).iterdir())
    bad = truncated_copy(path/'bird')

    failed = verify_images(get_image_files(path))
    assert isinstance(failed, L)
    assert sorted(failed) == [bad], f"expected only the file copied in by hand; a failed download must never reach {path}"
    assert bad.exists()                       # fastai's contract: the caller unlinks
    failed.map(Path.unlink)
    assert len(failed) == 1 and not bad.exists()
    assert undecodable(get_image_files(path)) == []

    DataBlock, ImageBlock, CategoryBlock = ns['DataBlock'], ns['ImageBlock'], ns['CategoryBlock']
    dls = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=ns['RandomSplitter'](valid_pct=0.2, seed=42),
        get_y=ns['parent_label'],
        item_tfms=[ns['Resize'](SZ, method='squish')]
    ).dataloaders(path, bs=8, num_workers=0)
    dls.show_batch(max_n=6)
    assert list(dls.vocab) == ['bird', 'forest']

    learn = ns['vision_learner'](dls, ns['resnet18'], metrics=ns['error_rate'], pretrained=False)
    learn.fine_tune(1)
    assert len(learn.recorder.values) == 1
    is_bird, _, probs = learn.predict(ns['PILImage'].create('bird.jpg'))
    assert is_bird in ('bird', 'forest') and abs(float(probs.sum()) - 1) < 1e-4
    print(f"This is a: {is_bird}.\nProbability it's a bird: {probs[0]:.4f}")


def test_course22_lesson2_saving_a_model_and_the_app(site, lesson_dir):
    ns = {}
    exec('from imgclean.all import *', ns)
    Path, get_image_files = ns['Path'], ns['get_image_files']
    # untar_data(URLs.PETS)/'images': Oxford-IIIT Pet file names, cats' breeds capitalised
    cats = [f'{b}_{i}.jpg' for b in ('Abyssinian', 'Bengal') for i in range(1, 7)]
    dogs = [f'{b}_{i}.jpg' for b in ('beagle', 'pug') for i in range(1, 7)]
    urls = site.add('cats', 'circle', len(cats), names=cats) + site.add('dogs', 'triangle', len(dogs), names=dogs)
    path = Path('pets')/'images'
    path.mkdir(parents=True)
    ns['download_images'](path, urls=urls, preserve_filename=True)
    assert sorted(f.name for f in get_image_files(path)) == sorted(cats + dogs)

    def is_cat(x): return x[0].isupper()
    dls = ns['ImageDataLoaders'].from_name_func('.',
        get_image_files(path), valid_pct=0.2, seed=42,
        label_func=is_cat,
        item_tfms=ns['Resize'](SZ), bs=8, num_workers=0)
    assert list(dls.vocab) == [False, True]
    learn = ns['vision_learner'](dls, ns['resnet18'], metrics=ns['error_rate'], pretrained=False)
    learn.fine_tune(1)
    learn.export('model.pkl')
    assert Path('model.pkl').stat().st_size > 0

    # the lesson's app (app.py on Hugging Face Spaces), without gradio
    learn = ns['load_learner']('model.pkl')
    categories = ('Dog', 'Cat')
    def classify_image(img):
        pred, idx, probs = learn.predict(img)
        return dict(zip(categories, map(float, probs)))
    res = classify_image(ns['PILImage'].create(path/'Abyssinian_1.jpg'))
    assert set(res) == set(categories) and abs(sum(res.values()) - 1) < 1e-4


def test_book_chapter2_bear_classifier(site, lesson_dir):
    from fastdownload import download_url    # the book has it from `from fastbook import *`
    ns = {}
    exec('from imgclean.all import *', ns)
    Path, L, get_image_files = ns['Path'], ns['L'], ns['get_image_files']
    bear_types = 'grizzly', 'black', 'teddy'
    for o, shape in zip(bear_types, ('circle', 'square', 'triangle')): site.add(f'{o} bear', shape, 10)
    def search_images_bing(key, term): return L([{'contentUrl': u} for u in site.urls(term)])
    key = 'XXX'

    results = search_images_bing(key, 'grizzly bear')
    ims = results.attrgot('contentUrl')
    dest = 'images/grizzly.jpg'
    download_url(ims[0], dest, show_progress=False)
    im = ns['Image'].open(dest)
    im.to_thumb(128, 128)

    path = Path('bears')
    if not path.exists():
        path.mkdir()
        for o in bear_types:
            dest = (path/o)
            dest.mkdir(exist_ok=True)
            results = search_images_bing(key, f'{o} bear')
            ns['download_images'](dest, urls=results.attrgot('contentUrl'))
    fns = get_image_files(path)
    assert len(fns) == 3*10
    failed = ns['verify_images'](fns)
    failed.map(Path.unlink);
    assert isinstance(failed, L) and len(failed) == 0   # nothing undecodable was kept

    DataBlock, Resize, ResizeMethod = ns['DataBlock'], ns['Resize'], ns['ResizeMethod']
    bears = DataBlock(
        blocks=(ns['ImageBlock'], ns['CategoryBlock']),
        get_items=get_image_files,
        splitter=ns['RandomSplitter'](valid_pct=0.2, seed=42),
        get_y=ns['parent_label'],
        item_tfms=Resize(SZ))
    dls = bears.dataloaders(path, bs=8, num_workers=0)
    dls.valid.show_batch(max_n=4, nrows=1)
    bears = bears.new(item_tfms=Resize(SZ, ResizeMethod.Squish))
    bears = bears.new(item_tfms=Resize(SZ, ResizeMethod.Pad, pad_mode='zeros'))
    bears = bears.new(item_tfms=ns['RandomResizedCrop'](SZ, min_scale=0.3))
    bears.dataloaders(path, bs=8, num_workers=0).train.show_batch(max_n=4, nrows=1, unique=True)
    bears = bears.new(item_tfms=ns['RandomResizedCrop'](SZ, min_scale=0.5), batch_tfms=ns['aug_transforms']())
    dls = bears.dataloaders(path, bs=8, num_workers=0)
    assert list(dls.vocab) == sorted(bear_types)

    learn = ns['vision_learner'](dls, ns['resnet18'], metrics=ns['error_rate'], pretrained=False)
    learn.fine_tune(1)
    interp = ns['ClassificationInterpretation'].from_learner(learn)
    interp.plot_confusion_matrix()
    interp.plot_top_losses(5, nrows=1)

    cleaner = ns['ImageClassifierCleaner'](learn)
    assert type(cleaner).__module__ == 'fastai.vision.widgets'
    # a reader's two clicks: the first image marked <Delete>, the second moved to another class
    tiles = cleaner.iw.widget.children
    tiles[0].children[1].value = '<Delete>'
    other = next(c for c in learn.dls.vocab if c != cleaner.dd_cats.value)
    tiles[1].children[1].value = other
    gone, moved = cleaner.fns[0], cleaner.fns[1]
    for idx in cleaner.delete(): cleaner.fns[idx].unlink()
    for idx, cat in cleaner.change(): shutil.move(str(cleaner.fns[idx]), path/cat)
    assert not gone.exists() and (path/other/moved.name).exists()

    learn.export()
    path = Path()
    assert path.ls(file_exts='.pkl') == [Path('export.pkl')]
    learn_inf = ns['load_learner'](path/'export.pkl')
    pred, pred_idx, probs = learn_inf.predict('images/grizzly.jpg')
    assert pred in bear_types and learn_inf.dls.vocab == learn.dls.vocab

    # the chapter's notebook app, its widgets built as the book builds them, an upload's bytes classified
    widgets, VBox = ns['widgets'], ns['VBox']
    btn_upload = widgets.FileUpload()
    img = ns['PILImage'].create(Path('images/grizzly.jpg').read_bytes())
    out_pl = widgets.Output()
    out_pl.clear_output()
    lbl_pred = widgets.Label()
    pred, pred_idx, probs = learn_inf.predict(img)
    lbl_pred.value = f'Prediction: {pred}; Probability: {probs[pred_idx]:.04f}'
    btn_run = widgets.Button(description='Classify')
    app = VBox([widgets.Label('Select your bear!'), btn_upload, btn_run, out_pl, lbl_pred])
    assert lbl_pred.value.startswith(f'Prediction: {pred}') and len(app.children) == 5


def test_fastai_v1_lesson2_download(site, lesson_dir):
    ns = {}
    exec('from imgclean.all import *', ns)
    Path, get_image_files = ns['Path'], ns['get_image_files']
    path = Path('data/bears')
    path.mkdir(parents=True)
    classes = ['teddys', 'grizzly', 'black']
    for c, shape in zip(classes, ('triangle', 'circle', 'square')):
        urls = site.add(c, shape, 8, big=1, dup=(c == 'black'))
        (path/f'urls_{c}.csv').write_text('\n'.join(urls) + '\n')    # what the lesson's browser snippet saves

    for folder in classes:
        file = f'urls_{folder}.csv'
        dest = path/folder
        dest.mkdir(parents=True, exist_ok=True)
        ns['download_images'](path/file, dest, max_pics=200)
        assert len(get_image_files(dest)) == site.good[folder]
    n_black = len(get_image_files(path/'black'))
    # "If you have problems download, try with `max_workers=0` to see exceptions": a rerun adds nothing
    ns['download_images'](path/'urls_black.csv', path/'black', max_pics=20, max_workers=0)
    assert len(get_image_files(path/'black')) == n_black
    bad = truncated_copy(path/'black')

    for c in classes:
        print(c)
        ns['verify_images'](path/c, delete=True, max_size=500)
    assert not bad.exists(), 'verify_images(delete=True) left a broken file in the class folder'
    assert [f for f in lesson_dir.rglob(bad.name)], 'delete=True must move the broken file aside, not destroy it'
    assert max(Image.open(path/'grizzly'/f).size[0] for f in [p.name for p in (path/'grizzly').iterdir()
                                                              if p.suffix == '.jpg']) <= 500
    assert undecodable(get_image_files(path)) == [], 'a quarantined file is still where from_folder finds it'

    # v1's ImageDataBunch.from_folder(path, train=".", valid_pct=0.2, ...) in fastai v2
    dls = ns['ImageDataLoaders'].from_folder(path, train='.', valid_pct=0.2, seed=42, item_tfms=ns['Resize'](SZ),
                                             bs=8, num_workers=0)
    assert list(dls.vocab) == sorted(classes)
    learn = ns['cnn_learner'](dls, ns['models'].resnet34, metrics=ns['error_rate'], pretrained=False)
    learn.fit_one_cycle(1)
    learn.save('stage-1')
    learn.unfreeze()
    learn.lr_find(num_it=10)                                      # the lesson's 100 steps: minutes on a CPU
    learn.fit_one_cycle(1, slice(3e-5, 3e-4))
    learn.save('stage-2')
    learn.load('stage-2');
    interp = ns['ClassificationInterpretation'].from_learner(learn)
    interp.plot_confusion_matrix()

    items = sorted(str(f.relative_to(path)) for f in get_image_files(path))
    ds, idxs = ns['DatasetFormatter']().from_toplosses(learn)
    cleaner = ns['ImageCleaner'](ds, idxs, path)
    shown = list(cleaner.tiles)                                   # the first page, highest loss first
    assert len(shown) >= 2 and set(shown) <= set(items)
    gone, moved = [n for n in cleaner.rows.file if not n.startswith('black/')][:2]   # the worst two outside black (its duplicate pair is for the next cleaner); page 1 may hold fewer
    cleaner.delete(gone)                                          # the tile's Delete button
    new_label = next(c for c in classes if c != moved.split('/')[0])
    cleaner.relabel(moved, new_label)                             # the tile's label dropdown
    cleaned = pd.read_csv(path/'cleaned.csv')
    assert sorted(cleaned.name) == sorted(set(items) - {gone})
    assert cleaned.set_index('name').label[moved] == new_label

    ds, idxs = ns['DatasetFormatter']().from_similars(learn)
    dups = ns['ImageCleaner'](ds, idxs, path, duplicates=True)
    orig, copy = (downloaded_as(path/'black', site.root/'img'/n) for n in ('black_0.png', 'black_copy.jpg'))
    groups = dups.rows.groupby('group').file.apply(set).tolist()
    assert any({orig, copy} <= g for g in groups), f'the re-encoded copy {copy} is not grouped with {orig}: {groups}'
    dups.keep_only(orig)                                          # "keep one" of the pair
    cleaned = pd.read_csv(path/'cleaned.csv')
    assert orig in set(cleaned.name) and copy not in set(cleaned.name)
    assert gone not in set(cleaned.name)                          # the first cleaner's decisions are kept
    # and fastai reads it back, as v1's ImageDataBunch.from_csv(path, folder=".", csv_labels='cleaned.csv') did
    # (columns by name: see test_fastai_reads_cleaned_csv_by_position for the default, positional ones)
    dls2 = ns['ImageDataLoaders'].from_csv(path, 'cleaned.csv', folder='.', fn_col='name', label_col='label',
                                           valid_pct=0.2, seed=42, item_tfms=ns['Resize'](SZ), bs=8, num_workers=0)
    assert len(dls2.train_ds) + len(dls2.valid_ds) == len(cleaned)

    learn.export()
    learn = ns['load_learner'](path/'export.pkl')
    img = ns['PILImage'].create(path/'black'/sorted(f.name for f in (path/'black').iterdir() if f.suffix == '.png')[0])
    pred_class, pred_idx, outputs = learn.predict(img)
    assert pred_class in classes and abs(float(outputs.sum()) - 1) < 1e-4


def test_fastai_reads_cleaned_csv_by_position(tmp_path):
    "`ImageDataLoaders.from_csv(path, 'cleaned.csv', folder='.')`: fastai's default columns are positions (0 and 1)"
    ns = {}
    exec('from imgclean.all import *', ns)
    for c in ('circle', 'square'):
        (tmp_path/c).mkdir()
        for i in range(4): draw_shape(c, SZ, seed=i).save(tmp_path/c/f'{i}.png')
    pd.DataFrame(dict(name=[f'{c}/{i}.png' for c in ('circle', 'square') for i in range(4)],
                      label=['circle']*4 + ['square']*4)).to_csv(tmp_path/'cleaned.csv', index=False)
    # fastai 2.8's ColReader reads an int column as row[0], which pandas 3 no longer takes as a position
    dls = ns['ImageDataLoaders'].from_csv(tmp_path, 'cleaned.csv', folder='.', valid_pct=0.25, seed=0,
                                          item_tfms=ns['Resize'](SZ), bs=2, num_workers=0)
    assert list(dls.vocab) == ['circle', 'square'] and len(dls.train_ds) + len(dls.valid_ds) == 8



def test_colreader_reads_integer_column_labels_as_labels():
    "read_csv(header=None) then a dropped column: labels 1, 2; ColReader(1) read position 1 (the wrong column), ColReader(2) raised IndexError"
    ns = {}
    exec('from imgclean.all import *', ns)
    df = pd.DataFrame({0: ['x', 'y'], 1: ['a.jpg', 'b.jpg'], 2: ['cat', 'dog']}).drop(columns=0)
    row = df.iloc[0]
    assert ns['ColReader'](1)(row) == 'a.jpg' and ns['ColReader'](2)(row) == 'cat'
    named = pd.DataFrame(dict(name=['a.jpg'], label=['cat'])).iloc[0]
    assert ns['ColReader'](0)(named) == 'a.jpg' and ns['ColReader'](1)(named) == 'cat'   # positions where no label is an int

def test_fastai_v2_download_call_forms(site, lesson_dir):
    ns = {}
    exec('from imgclean.all import *', ns)
    Path, download_images, get_image_files = ns['Path'], ns['download_images'], ns['get_image_files']
    urls = site.add('owls', 'star', 6, faults=False)
    url_file = Path('urls_owls.txt'); url_file.write_text('\n'.join(urls))
    download_images(Path('owls'), url_file=url_file, max_pics=3, n_workers=2, timeout=2)
    assert len(get_image_files('owls')) == 3
    download_images(Path('owls2'), urls=urls, n_workers=2, timeout=2, preserve_filename=True)
    assert sorted(f.name for f in get_image_files('owls2')) == sorted(u.rsplit('/', 1)[1] for u in urls)
    # one clear error for each wrong call, naming what to pass
    with pytest.raises((TypeError, ValueError), match='url_file'): download_images(Path('x'), url_file=url_file, urls=urls)
    with pytest.raises((TypeError, ValueError), match='url'): download_images(Path('x'))
    with pytest.raises((FileNotFoundError, ValueError), match='missing.txt'):
        download_images(Path('x'), url_file=Path('missing.txt'))
    assert not Path('x').exists() or not any(Path('x').iterdir())


def test_fastai_image_classifier_cleaner_on_our_learner(tmp_path, notebook):
    "fastai's own `ImageClassifierCleaner(learn)` on a learner built with imgclean's `folder_dls` + `make_learner`"
    ns = {}
    exec('from imgclean.all import *', ns)
    root = tmp_path/'shapes'
    for c in ('circle', 'square'):
        (root/c).mkdir(parents=True)
        for i in range(8): draw_shape(c, SZ, seed=i).save(root/c/f'{i}.png')
    dls = ns['folder_dls'](root, valid_pct=0.25, seed=0, size=SZ, bs=4, num_workers=0)
    learn = ns['make_learner'](dls, 'resnet18', pretrained=False)
    cleaner = ns['ImageClassifierCleaner'](learn)
    assert len(cleaner.fns) > 0 and all(Path(f).exists() for f in cleaner.fns)
    cleaner.iw.widget.children[0].children[1].value = '<Delete>'
    assert list(cleaner.delete()) == [0]



def test_a_broken_file_that_stops_fit_is_named(tmp_path):
    "A truncated JPEG in the class folders (the lesson skips verify): fastai's fit stopped with `OSError: Truncated File Read`, raised in a DataLoader worker, naming no file"
    from imgclean.all import ImageDataLoaders, Resize, resnet18, vision_learner
    for c in ('a', 'b'):
        (tmp_path/c).mkdir()
        for i in range(6): draw_shape(('circle', 'square')[c == 'b'], SZ, seed=i).convert('RGB').save(tmp_path/c/f'{i}.jpg', quality=90)
    bad = tmp_path/'a'/'3.jpg'; bad.write_bytes(bad.read_bytes()[:200])
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, num_workers=2)
    learn = vision_learner(dls, resnet18, pretrained=False)
    with pytest.raises(Exception) as e: learn.fit(1)
    assert f'the image file was {bad}' in str(e.value) + ''.join(getattr(e.value, '__notes__', [])), str(e.value)[-800:]
