"Classification report, confusion matrix, wrong-prediction gallery, top-5 and history on a tiny trained learner."
import sys
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_helpers import tiny_learner  # noqa: E402

from imgclean.interpret import (classification_report, confusion_table, fit_history, interpretation, most_confused,  # noqa: E402
                                plot_confusion, plot_history, plot_top5, plot_wrong, predict_probs, report_from_labels,
                                report_on_items, wrong_predictions)


@pytest.fixture(scope='module')
def trained():
    return tiny_learner()


def hand_report(targ, pred, n):
    "Precision/recall/F1/support per class with plain loops, for comparison"
    rows = []
    for c in range(n):
        tp = sum(1 for t, p in zip(targ, pred) if t == c and p == c)
        npred = sum(1 for p in pred if p == c); nact = sum(1 for t in targ if t == c)
        prec = tp/npred if npred else 0.0; rec = tp/nact if nact else 0.0
        rows.append((prec, rec, 2*prec*rec/(prec + rec) if prec + rec else 0.0, nact))
    return rows


def test_report_matches_hand_computation(trained):
    learn, _, _ = trained
    interp = interpretation(learn)
    targ = interp.targs.tolist(); pred = interp.preds.argmax(1).tolist()
    rep = classification_report(interp)
    vocab = list(learn.dls.vocab)
    assert list(rep.index) == [*vocab, 'accuracy', 'macro avg', 'weighted avg']
    rows = hand_report(targ, pred, len(vocab))
    for c, row in zip(vocab, rows): np.testing.assert_allclose(rep.loc[c].values.astype(float), row)
    n = len(targ)
    np.testing.assert_allclose(rep.loc['accuracy', 'f1'], sum(t == p for t, p in zip(targ, pred))/n)
    np.testing.assert_allclose(rep.loc['macro avg', ['precision', 'recall', 'f1']].values.astype(float), np.mean([r[:3] for r in rows], 0))
    w = np.array([r[3] for r in rows])/n
    np.testing.assert_allclose(rep.loc['weighted avg', ['precision', 'recall', 'f1']].values.astype(float), (np.array([r[:3] for r in rows])*w[:, None]).sum(0))
    assert rep.loc['macro avg', 'support'] == n == len(learn.dls.valid_ds)
    # the learner form computes the same thing as the interpretation form
    pd.testing.assert_frame_equal(classification_report(learn), rep)


def test_report_from_labels_edge_cases():
    rep = report_from_labels(['a', 'a', 'b'], ['a', 'a', 'a'], classes=['a', 'b'])
    assert rep.loc['b'].tolist() == [0.0, 0.0, 0.0, 1]          # never predicted: precision 0, no crash
    np.testing.assert_allclose(rep.loc['a', ['precision', 'recall']].values.astype(float), [2/3, 1])
    rep = report_from_labels(['a', 'z'], ['a', 'a'], classes=['a'])  # a label outside the classes still counts
    assert 'z' in rep.index and rep.loc['z', 'support'] == 1
    with pytest.raises(ValueError, match='no items'): report_from_labels([], [])
    with pytest.raises(ValueError, match='2 actual labels but 1'): report_from_labels(['a', 'b'], ['a'])
    with pytest.raises(TypeError, match='Learner'): classification_report('export.pkl')


def test_confusion_and_most_confused(trained):
    learn, _, _ = trained
    interp = interpretation(learn)
    cm = confusion_table(interp)
    targ = interp.targs.numpy(); pred = interp.preds.argmax(1).numpy()
    for i in range(len(cm)):
        for j in range(len(cm)): assert cm.iloc[i, j] == int(((targ == i) & (pred == j)).sum())
    np.testing.assert_allclose(confusion_table(interp, normalize=True).sum(axis=1), 1)
    mc = most_confused(interp)
    assert list(mc.columns) == ['actual', 'predicted', 'count']
    assert mc['count'].sum() == (targ != pred).sum() and (mc.actual != mc.predicted).all()
    assert mc['count'].is_monotonic_decreasing
    for fig in (plot_confusion(interp), plot_confusion(interp, normalize=True)): assert fig.axes


def test_wrong_gallery(trained):
    learn, _, _ = trained
    interp = interpretation(learn)
    wr = wrong_predictions(interp)
    assert len(wr) == int((interp.targs != interp.preds.argmax(1)).sum())
    assert (wr.actual != wr.predicted).all() and wr.probability.is_monotonic_decreasing
    assert len(wr), "the 1-epoch learner should make mistakes on this data"
    fig = plot_wrong(interp, n=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == min(4, len(wr))
    assert titles[0].startswith(f"{wr.actual[0]} → {wr.predicted[0]}")


def test_predict_probs_and_top5(trained, tmp_path):
    learn, root, _ = trained
    files = sorted(root.rglob('*.png'))[:4]
    (tmp_path/'x.png').write_bytes(b'garbage')
    probs, reasons = predict_probs(learn, files + [tmp_path/'x.png', tmp_path/'missing.png'], bs=3, progress=False)
    assert probs.shape == (6, 3) and reasons[:4] == [''] * 4
    np.testing.assert_allclose(probs[:4].sum(1), 1, atol=1e-5)
    assert np.isnan(probs[4:]).all() and reasons[5] == 'file not found' and 'not a readable image' in reasons[4]
    from fastai.vision.core import PILImage
    np.testing.assert_allclose(learn.predict(PILImage.create(files[0]))[2].numpy(), probs[0], atol=1e-5)
    fig = plot_top5(learn, files[0], k=2)
    bars = fig.axes[0].patches
    assert len(bars) == 2 and bars[-1].get_width() >= bars[0].get_width()   # best class on top
    np.testing.assert_allclose(bars[-1].get_width(), probs[0].max(), atol=1e-6)
    with pytest.raises(ValueError, match='not a readable image'): plot_top5(learn, tmp_path/'x.png')


def test_report_on_items(trained):
    learn, root, items = trained
    rep = report_on_items(learn, root, items, valid_only=True)
    pd.testing.assert_frame_equal(rep, classification_report(learn))
    with pytest.raises(ValueError, match="missing \\['label'\\]"): report_on_items(learn, root, items[['name']])


def test_history():
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18
    learn = vision_learner(tiny_learner()[0].dls, resnet18, pretrained=False)  # a fresh one: the shared learner stays as is
    with pytest.raises(ValueError, match='no training history'): fit_history(learn)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-4)
    h = fit_history(learn)
    assert len(h) == 2 and {'train_loss', 'valid_loss'} <= set(h.columns)
    np.testing.assert_allclose(h.valid_loss.values, [v[1] for v in learn.recorder.values])
    assert plot_history(learn).axes
    learn.validate()  # fastai's Recorder forgets the fit here: we say so instead of plotting nonsense
    with pytest.raises(ValueError, match='right after training'): plot_history(learn)


def test_report_on_a_test_set_that_is_not_there(trained):
    "ds_idx=2 without a test set says how to add one (an IndexError before)"
    learn, _, _ = trained
    with pytest.raises(ValueError, match='no test set: pass test= to folder_dls'): classification_report(learn, ds_idx=2)
