"""Tests for portacnn.plots: PNGs are written, the NumPy helpers are right, bad input is refused."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import portacnn.plots as plots  # noqa: E402

pytestmark = pytest.mark.slow  # matplotlib renders every figure: run by .ci/run, not by a plain pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, fig=None):
    """``path`` holds a whole PNG; ``fig``, when given, is the Figure the plot returned for it."""
    if fig is not None:
        from matplotlib.figure import Figure

        assert isinstance(fig, Figure), type(fig)
    assert path.exists(), path
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data[:8] == PNG_SIGNATURE
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
        assert w > 0 and h > 0
    # no temp files left behind by the atomic write
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def no_figure_leaks():
    """plots never goes through pyplot, so pyplot's figure registry must stay empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before == []


def make_proba(rng, n, c=10):
    logits = rng.normal(size=(n, c))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# PNG output
# ------------------------------------------------------------------------------------------------


def test_plots_available():
    assert plots.plots_available() is True


def test_sample_grid_uint8(tmp_path, rng):
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50)
    fig = plots.sample_grid(images, labels, tmp_path / "samples.png")
    assert_png(tmp_path / "samples.png", fig)


def test_sample_grid_nchw_float_fewer_than_n(tmp_path, rng):
    images = rng.random((7, 1, 28, 28)).astype(np.float32)
    labels = np.arange(7)
    fig = plots.sample_grid(images, labels, tmp_path / "sub" / "s.png", n=40, cols=10, title="seven")
    assert_png(tmp_path / "sub" / "s.png", fig)


@pytest.fixture
def drawn(monkeypatch):
    """What each figure the plots draw shows, per axes: (title, first image's pixels, x and y tick labels), read
    before the figure is written (and released)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append([(ax.get_title(), np.asarray(ax.images[0].get_array()) if ax.images else None,
                         [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()])
                        for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_colour_images_are_drawn_in_colour_with_class_names(tmp_path, rng, drawn, layout):
    images = rng.random((5, 3, 6, 7)).astype(np.float32) * 4 - 2  # normalised colour images
    shown = images if layout == "channels_first" else np.moveaxis(images, 1, -1)
    names = ["cat", "dog", "ship"]
    assert_png(tmp_path / "s.png", plots.sample_grid(shown, [2, 0, 1, 1, 0], tmp_path / "s.png", class_names=names))
    axes = drawn[0]
    assert [ax[0] for ax in axes[:5]] == ["ship", "cat", "dog", "dog", "cat"]
    lo, hi = float(images.min()), float(images.max())
    pixels = axes[1][1]
    np.testing.assert_allclose(pixels, (np.moveaxis(images[1], 0, -1) - lo) / (hi - lo), rtol=1e-6)


def test_confusion_matrix_and_mistakes_name_the_classes(tmp_path, rng, drawn):
    names = ["cat", "dog", "ship"]
    plots.confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], tmp_path / "c.png", num_classes=3, class_names=names)
    _, _, xticks, yticks = drawn[0][0]
    assert xticks == names == yticks
    proba = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    plots.worst_mistakes(np.zeros((2, 3, 4, 4), np.uint8), [0, 0], proba, tmp_path / "m.png", class_names=names)
    assert drawn[1][0][0] == "true cat / pred dog (0.90)"


def test_training_curves_with_and_without_validation(tmp_path):
    hist = {"loss": [1.0, 0.6, 0.4], "accuracy": [0.6, 0.8, 0.9],
            "val_loss": [0.9, 0.7, 0.5], "val_accuracy": [0.7, 0.8, 0.85]}  # fmt: skip
    assert_png(tmp_path / "curves.png", plots.training_curves(hist, tmp_path / "curves.png"))
    assert_png(tmp_path / "c2.png",
               plots.training_curves({"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}, tmp_path / "c2.png"))
    assert_png(tmp_path / "c3.png", plots.training_curves({"loss": np.array([1.0])}, tmp_path / "c3.png"))


def test_training_curves_accepts_history_object(tmp_path):
    class History:
        history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}

    assert_png(tmp_path / "curves.png", plots.training_curves(History(), tmp_path / "curves.png"))


def test_confusion_matrix_png(tmp_path, rng):
    y = rng.integers(0, 10, size=200)
    p = np.where(rng.random(200) < 0.8, y, rng.integers(0, 10, size=200))
    assert_png(tmp_path / "confusion.png", plots.confusion_matrix(y, p, tmp_path / "confusion.png"))


def test_conv_filters_png(tmp_path, rng):
    assert_png(tmp_path / "f1.png", plots.conv_filters(rng.normal(size=(32, 1, 3, 3)), tmp_path / "f1.png"))
    assert_png(tmp_path / "f3.png",
               plots.conv_filters(rng.normal(size=(4, 3, 5, 5)).astype(np.float32), tmp_path / "f3.png"))
    assert_png(tmp_path / "zeros.png", plots.conv_filters(np.zeros((2, 1, 3, 3)), tmp_path / "zeros.png"))


def test_worst_mistakes_png(tmp_path, rng):
    images = rng.integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=100)
    proba = make_proba(rng, 100)
    assert_png(tmp_path / "mistakes.png", plots.worst_mistakes(images, y, proba, tmp_path / "mistakes.png", n=16))


def test_worst_mistakes_none(tmp_path, rng):
    proba = make_proba(rng, 5)
    y = proba.argmax(1)  # every prediction right
    images = rng.random((5, 1, 28, 28))
    assert_png(tmp_path / "none.png", plots.worst_mistakes(images, y, proba, tmp_path / "none.png"))


def test_png_replaces_existing_file(tmp_path, rng):
    target = tmp_path / "c.png"
    target.write_bytes(b"old contents")
    plots.confusion_matrix([0, 1], [0, 1], target, num_classes=2)
    assert_png(target)


def test_save_all(tmp_path, rng):
    n = 60
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    proba = make_proba(rng, n)
    hist = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7], "val_loss": [0.9, 0.6], "val_accuracy": [0.6, 0.7]}
    paths = plots.save_all(tmp_path / "plots", history=hist, model_weight=rng.normal(size=(8, 1, 3, 3)),
                           images=images, y_true=y, proba=proba,
                           sample_images=images[:20], sample_labels=y[:20])  # fmt: skip
    names = sorted(p.name for p in paths)
    assert names == ["confusion.png", "curves.png", "filters.png", "mistakes.png", "samples.png"]
    for p in paths:
        assert p.parent == tmp_path / "plots"
        assert_png(p)


def test_save_all_partial(tmp_path, rng):
    assert plots.save_all(tmp_path) == []
    paths = plots.save_all(tmp_path, history={"loss": [1.0, 0.5]})
    assert [p.name for p in paths] == ["curves.png"]
    with pytest.raises(ValueError, match="sample_labels"):
        plots.save_all(tmp_path, sample_images=np.zeros((2, 28, 28), np.uint8))


# ------------------------------------------------------------------------------------------------
# NumPy helpers
# ------------------------------------------------------------------------------------------------


def test_confusion_counts_known_example():
    y_true = [0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 1, 1]  # class 2 never predicted
    got = plots.confusion_counts(y_true, y_pred, 3)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 2, 0]])
    assert got.dtype == np.int64
    assert got.shape == (3, 3)
    np.testing.assert_array_equal(got, expected)
    assert got[:, 2].sum() == 0
    assert got.sum() == len(y_true)


def test_confusion_counts_empty_and_unseen_classes():
    got = plots.confusion_counts(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 4)
    np.testing.assert_array_equal(got, np.zeros((4, 4), np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_counts_matches_naive_loop(seed):
    r = np.random.default_rng(seed)
    c = int(r.integers(2, 12))
    n = int(r.integers(1, 500))
    y_true = r.integers(0, c, size=n)
    y_pred = r.integers(0, c, size=n)
    oracle = np.zeros((c, c), dtype=np.int64)
    for t in range(c):
        for p in range(c):
            oracle[t, p] = sum(1 for a, b in zip(y_true, y_pred) if a == t and b == p)
    np.testing.assert_array_equal(plots.confusion_counts(y_true, y_pred, c), oracle)


def test_worst_mistake_indices_constructed():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    proba = np.array([
        [0.90, 0.05, 0.05],  # 0: correct
        [0.60, 0.30, 0.10],  # 1: wrong, 0.60
        [0.05, 0.94, 0.01],  # 2: wrong, 0.94  <- worst
        [0.10, 0.80, 0.10],  # 3: wrong, 0.80
        [0.20, 0.70, 0.10],  # 4: correct
        [0.45, 0.50, 0.05],  # 5: wrong, 0.50
    ])  # fmt: skip
    np.testing.assert_array_equal(plots.worst_mistake_indices(y_true, proba, 2), [2, 3])
    np.testing.assert_array_equal(plots.worst_mistake_indices(y_true, proba, 4), [2, 3, 1, 5])
    # fewer mistakes than asked for: all of them, in order
    got = plots.worst_mistake_indices(y_true, proba, 16)
    np.testing.assert_array_equal(got, [2, 3, 1, 5])
    assert got.dtype == np.int64
    assert plots.worst_mistake_indices(y_true, proba, 0).size == 0


def test_worst_mistake_indices_no_mistakes(rng):
    proba = make_proba(rng, 20)
    assert plots.worst_mistake_indices(proba.argmax(1), proba, 5).size == 0


def test_worst_mistake_indices_random_matches_sort(rng):
    proba = make_proba(rng, 300)
    y = rng.integers(0, 10, size=300)
    got = plots.worst_mistake_indices(y, proba, 10)
    pred = proba.argmax(1)
    wrong = [i for i in range(300) if pred[i] != y[i]]
    expected = sorted(wrong, key=lambda i: -proba[i, pred[i]])[:10]
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------


def test_value_errors(tmp_path):
    img = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="labels"):
        plots.sample_grid(img, [0, 1, 2], tmp_path / "x.png")
    with pytest.raises(ValueError, match="images"):
        plots.sample_grid(np.zeros((4, 28)), [0, 1, 2, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="images"):
        plots.sample_grid(np.zeros((4, 2, 28, 28)), [0, 1, 2, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        plots.confusion_matrix([0, 1], [0, 2], tmp_path / "x.png", num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        plots.sample_grid(img, np.zeros((4, 1)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="y_pred"):
        plots.confusion_counts([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match="y_true"):
        plots.confusion_counts(np.zeros((2, 2), int), [0, 1], 2)
    with pytest.raises(ValueError, match="y_pred"):
        plots.confusion_counts([0, 1], [0, 5], 2)
    with pytest.raises(ValueError, match="y_true"):
        plots.confusion_matrix([0, 1.5], [0, 1], tmp_path / "x.png", num_classes=2)
    with pytest.raises(ValueError, match="weight"):
        plots.conv_filters(np.zeros((3, 3, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="proba"):
        plots.worst_mistake_indices([0, 1], np.zeros(2), 3)
    with pytest.raises(ValueError, match="proba"):
        plots.worst_mistake_indices([0, 1, 0], np.full((2, 3), 1 / 3), 3)
    with pytest.raises(ValueError, match="images"):
        plots.worst_mistakes(img, [0, 1, 0], np.full((3, 10), 0.1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="val_loss"):
        plots.training_curves({"loss": [1.0, 0.5], "val_loss": [0.9]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="history"):
        plots.training_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="history"):
        plots.training_curves({"loss": [[1.0, 2.0]]}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())  # nothing written for bad input


# ------------------------------------------------------------------------------------------------
# matplotlib missing
# ------------------------------------------------------------------------------------------------


def test_plot_unavailable_when_matplotlib_missing(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError

    # importing the module must not need matplotlib: load a fresh private copy (leaves the real one alone)
    spec = importlib.util.spec_from_file_location("portacnn._plots_without_mpl", plots.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.plots_available() is False

    assert plots.plots_available() is False
    with pytest.raises(plots.PlotUnavailable) as excinfo:
        plots.confusion_matrix([0, 1], [0, 1], tmp_path / "c.png", num_classes=2)
    assert isinstance(excinfo.value, ImportError)
    assert str(excinfo.value) == "matplotlib is not installed; pip install 'portacnn[plot]' to get plots"
    with pytest.raises(plots.PlotUnavailable, match="portacnn\\[plot\\]"):
        plots.save_all(tmp_path, history={"loss": [1.0]})
    with pytest.raises(copy.PlotUnavailable):
        copy.sample_grid(np.zeros((1, 28, 28), np.uint8), [3], tmp_path / "s.png")
    # the pure-NumPy helpers keep working
    np.testing.assert_array_equal(plots.confusion_counts([0, 1], [1, 1], 2), [[0, 1], [0, 1]])
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    assert plots.plots_available() is True


def test_plots_take_arrays_on_another_device(tmp_path, rng):
    """Device arrays that refuse numpy.asarray (array_api_strict on a second device, as CuPy's do) are read
    through the backend's host copy instead of failing."""
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    images = strict.asarray(rng.random((12, 1, 28, 28)).astype(np.float32), device=dev)
    labels = strict.asarray(rng.integers(0, 10, 12), device=dev)
    assert_png(tmp_path / "grid.png", plots.sample_grid(images, labels, tmp_path / "grid.png", n=12))
    proba = strict.asarray(rng.dirichlet(np.ones(10), 12).astype(np.float32), device=dev)
    assert_png(tmp_path / "worst.png", plots.worst_mistakes(images, labels, proba, tmp_path / "worst.png", n=4))
    assert_png(tmp_path / "confusion.png",
               plots.confusion_matrix(labels, strict.argmax(proba, axis=1), tmp_path / "confusion.png"))


# ------------------------------------------------------------------------------------------------
# figures returned (notebooks), the test score on the curves, the explain plots
# ------------------------------------------------------------------------------------------------


def _shown(ax):
    """The pixel arrays an axes shows, in drawing order."""
    return [np.asarray(im.get_array()) for im in ax.images]


def test_figures_are_returned_without_a_path_and_show_inline(tmp_path, rng, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    figs = [plots.sample_grid(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), [0, 1, 2]),
            plots.training_curves({"loss": [1.0, 0.5]}),
            plots.confusion_matrix([0, 1], [1, 1], num_classes=2),
            plots.conv_filters(rng.normal(size=(2, 1, 3, 3))),
            plots.worst_mistakes(np.zeros((2, 8, 8)), [0, 1], np.array([[0.1, 0.9], [0.2, 0.8]])),
            plots.feature_maps(rng.random((3, 5, 5))),
            plots.saliency(rng.random((8, 8)), rng.random((8, 8))),
            plots.grad_cam(rng.random((8, 8)), rng.random((8, 8)))]
    assert not list(tmp_path.iterdir())  # no path: nothing written
    for fig in figs:
        assert isinstance(fig, Figure) and fig.axes
        assert fig._repr_png_()[:8] == PNG_SIGNATURE  # what a notebook calls to show it inline
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        return
    data, _ = InteractiveShell.instance().display_formatter.format(figs[1])
    assert data["image/png"][:8] == PNG_SIGNATURE


def test_figure_written_to_path_is_still_whole(tmp_path):
    fig = plots.training_curves({"loss": [1.0, 0.5]}, tmp_path / "c.png")
    assert_png(tmp_path / "c.png", fig)
    assert len(fig.axes) == 2 and fig.axes[0].lines  # not cleared: the caller can show or save it again
    fig.savefig(tmp_path / "again.png")
    assert_png(tmp_path / "again.png")


def test_training_curves_mark_the_test_score(tmp_path):
    hist = {"loss": [1.0, 0.6, 0.4], "accuracy": [0.6, 0.8, 0.985]}  # no validation: the default CLI run
    fig = plots.training_curves(hist, tmp_path / "c.png", test={"accuracy": 0.932, "loss": 0.25, "n": 100})
    assert_png(tmp_path / "c.png", fig)
    for ax, value, shown in zip(fig.axes[:2], (0.25, 0.932), ("test 0.2500", "test 93.20%")):
        lines = [line for line in ax.lines if line.get_label() == "test"]
        assert len(lines) == 1
        np.testing.assert_array_equal(lines[0].get_ydata(), [value, value])
        assert shown in ax.get_title()
        assert "test" in [t.get_text() for t in ax.get_legend().get_texts()]
    only = plots.training_curves(hist, test={"accuracy": np.float32(0.5)})  # one key: one panel marked
    assert [len([ln for ln in ax.lines if ln.get_label() == "test"]) for ax in only.axes[:2]] == [0, 1]
    plain = plots.training_curves(hist)
    assert not [ln for ax in plain.axes for ln in ax.lines if ln.get_label() == "test"]
    for bad in ([0.9], {"accuracy": float("nan")}, {"loss": "low"}):
        with pytest.raises(ValueError, match="test"):
            plots.training_curves(hist, test=bad)


def test_save_all_marks_the_test_score_on_the_curves(tmp_path, drawn):
    plots.save_all(tmp_path, history={"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}, test={"accuracy": 0.6})
    assert drawn[0][1][0] == "accuracy per epoch (test 60.00%)"


def test_cli_curves_get_the_final_test_score(tmp_path, monkeypatch):
    """``portacnn train`` passes its final test result to the curves."""
    import portacnn as pc
    from portacnn.cli import train

    seen = {}

    def save_all(out, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(plots, "save_all", save_all)

    class Args:
        data = None

    class Recipe:
        augment = None

        def augmentation(self):
            return None

    class History:
        history = {"loss": [1.0]}

    x, y = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, int)
    train._draw(tmp_path, pc.models.seed_cnn(), History(), x, y, x, y, Args(), Recipe(),
                {"accuracy": 0.93, "loss": 0.2, "n": 4})
    assert seen["test"] == {"accuracy": 0.93, "loss": 0.2}


def test_feature_maps_plot_shows_each_map(rng):
    maps = rng.normal(size=(5, 6, 7)).astype(np.float32)
    fig = plots.feature_maps(maps, cols=3)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5
    for k, ax in enumerate(panels):
        np.testing.assert_array_equal(_shown(ax)[0], maps[k])
        assert ax.get_title() == f"channel {k}"
        assert ax.images[0].get_clim() == (float(maps.min()), float(maps.max()))  # one shared scale
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 5 + 1  # the maps and the colour bar
    assert len([ax for ax in plots.feature_maps(maps, max_maps=2).axes if ax.images]) == 2
    with pytest.raises(ValueError, match="maps"):
        plots.feature_maps(rng.random(10))  # a flat layer's output


@pytest.mark.parametrize("draw", ["saliency", "grad_cam"])
def test_saliency_and_grad_cam_plots_show_image_map_and_overlay(rng, draw):
    image = rng.integers(0, 256, (1, 9, 8), dtype=np.uint8)
    heat = rng.random((9, 8))
    fig = getattr(plots, draw)(image, heat, title="why")
    image_ax, map_ax, over_ax = fig.axes[:3]
    np.testing.assert_array_equal(_shown(image_ax)[0], image[0])
    np.testing.assert_array_equal(_shown(map_ax)[0], heat)
    grey, top = _shown(over_ax)
    np.testing.assert_array_equal(grey, image[0])
    np.testing.assert_array_equal(top, heat)
    assert fig.get_suptitle() == "why"
    colour = rng.random((3, 9, 8)).astype(np.float32)  # colour images show in colour, their map over a grey copy
    fig = getattr(plots, draw)(colour, heat)
    assert _shown(fig.axes[0])[0].shape == (9, 8, 3)
    np.testing.assert_allclose(_shown(fig.axes[2])[0], colour.mean(axis=0), rtol=1e-6)
    assert "(all zero)" in getattr(plots, draw)(image, np.zeros((9, 8))).axes[1].get_title()
    with pytest.raises(ValueError, match="shape"):
        getattr(plots, draw)(image, rng.random((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        getattr(plots, draw)(image, np.full((9, 8), np.nan))
    with pytest.raises(ValueError, match="one image"):
        getattr(plots, draw)(rng.random((2, 3, 9, 8)), heat)
