"""Diagnostic plots: sample digits, training curves (with the final test score), confusion matrix, first-layer
filters, worst mistakes, and what the network looks at (feature maps, saliency, Grad-CAM; see :mod:`portacnn.explain`).

matplotlib is an optional extra (``pip install 'portacnn[plot]'``). It is imported lazily, inside the
functions that draw, so ``import portacnn.plots`` always works; drawing without matplotlib raises
:class:`PlotUnavailable`. The pure-NumPy helpers (:func:`confusion_counts`,
:func:`worst_mistake_indices`) never need it.

Every drawing function returns its ``matplotlib.figure.Figure``; given a ``path`` it also writes it there as
PNG. A figure shows itself inline in Jupyter as the last value of a cell (it carries a ``_repr_png_``, which
IPython's display machinery calls), so ``pc.plots.training_curves(history)`` in a notebook draws the curves.

Figures are built with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` rather than pyplot, so no
global backend is selected, no GUI is touched and nothing is left registered in pyplot's figure
manager: a figure lives as long as the caller keeps it. Every PNG is written atomically: rendered in memory,
written to a temporary file in the destination folder, then renamed into place, so a reader never sees a
half-written file.

All functions take host (NumPy) arrays; bring device arrays back first (e.g. ``backend.to_numpy``).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from .backend import to_host
from .validation import Integer, Real, check

__all__ = [
    "PlotUnavailable", "plots_available", "sample_grid", "training_curves", "confusion_matrix",
    "confusion_counts", "conv_filters", "worst_mistakes", "worst_mistake_indices", "save_all",
    "feature_maps", "saliency", "grad_cam",
]  # fmt: skip

DPI = 100
_MISSING_MESSAGE = "matplotlib is not installed; pip install 'portacnn[plot]' to get plots"


class PlotUnavailable(ImportError):
    """Raised when a plot is requested but matplotlib cannot be imported."""


# --------------------------------------------------------------------------------------------------
# matplotlib plumbing
# --------------------------------------------------------------------------------------------------


def _matplotlib():
    """Import what we need from matplotlib, or raise PlotUnavailable. Returns (Figure, FigureCanvasAgg)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(_MISSING_MESSAGE) from exc
    return Figure, FigureCanvasAgg


def plots_available() -> bool:
    """True when matplotlib can be imported, i.e. the plotting functions will work."""
    try:
        _matplotlib()
    except PlotUnavailable:
        return False
    return True


def _new_figure(figsize):
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    # what IPython's display formatters call to show the figure inline: a Figure made without pyplot has no PNG
    # representation of its own unless a notebook has switched matplotlib's inline backend on (its type printer
    # then comes first; either way the figure shows once)
    fig._repr_png_ = functools.partial(_png, fig)
    return fig


def _png(fig) -> bytes:
    """``fig`` rendered as PNG bytes (white background, :data:`DPI`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _save(fig, path) -> Path:
    """Render ``fig`` to ``path`` as PNG atomically (see :func:`portacnn._atomic.atomic_write`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _png(fig))
    return path


def _finish(fig, path):
    """``fig``, written to ``path`` first when one is given."""
    if path is not None:
        _save(fig, path)
    return fig

def _grid_shape(count: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, count))
    rows = -(-count // cols)
    return rows, cols


def _hide_unused(axes, used: int):
    for ax in axes.flat[used:]:
        ax.set_visible(False)


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _as_host(x, name: str) -> np.ndarray:
    """Arrays of any library (CuPy via .get(), torch, strict on any device, Dask) or lists, on the host."""
    return to_host(x, name)


def _images(images, name: str = "images") -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) -> (N, H, W); colour (N, 3, H, W) or (N, H, W, 3) -> (N, H, W, 3) host array."""
    arr = _as_host(images, name)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[1] == 3:
        arr = np.moveaxis(arr, 1, -1)
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise ValueError(f"{name} must have shape (N, H, W), (N, 1, H, W), (N, 3, H, W) or (N, H, W, 3); got shape "
                         f"{arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be an integer or floating array; got dtype {arr.dtype}")
    return arr


def _labels(labels, name: str, num_classes: int | None = None) -> np.ndarray:
    """1-D integer labels (integral floats accepted), optionally checked against [0, num_classes)."""
    arr = _as_host(labels, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample); got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if num_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}); got values in [{arr.min()}, {arr.max()}]")
    return arr


def _show(ax, img, vmin: float, vmax: float) -> None:
    """One image: grey with a shared grey scale; colour rescaled from [vmin, vmax] to [0, 1] (normalised images
    show as they were before normalisation, up to a shared contrast stretch)."""
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        return
    span = vmax - vmin if vmax > vmin else 1.0
    ax.imshow(np.clip((img.astype(np.float64) - vmin) / span, 0.0, 1.0), interpolation="nearest")


def _name(class_names, k) -> str:
    return str(int(k)) if class_names is None else str(class_names[int(k)])


def _proba(proba, name: str = "proba") -> np.ndarray:
    arr = _as_host(proba, name)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, num_classes); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    return arr


def _same_length(**arrays):
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {desc}")


def _positive_int(value, name: str) -> int:
    return check(value, Integer(1), name)


def _image_range(arr: np.ndarray) -> tuple[float, float]:
    """A shared greyscale range: 0..255 for uint8, else the data's min..max (never degenerate)."""
    if arr.dtype == np.uint8:
        return 0.0, 255.0
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


# --------------------------------------------------------------------------------------------------
# pure-NumPy helpers
# --------------------------------------------------------------------------------------------------


def confusion_counts(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """(C, C) int64 counts: ``out[t, p]`` = number of samples of true class t predicted as p."""
    num_classes = _positive_int(num_classes, "num_classes")
    t = _labels(y_true, "y_true", num_classes)
    p = _labels(y_pred, "y_pred", num_classes)
    _same_length(y_true=t, y_pred=p)
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.astype(np.int64, copy=False).reshape(num_classes, num_classes)


def worst_mistake_indices(y_true, proba, n: int = 16) -> np.ndarray:
    """Indices of up to ``n`` misclassified samples, most confident wrong prediction first.

    The prediction is ``proba.argmax(1)``; a sample is a mistake when that differs from ``y_true``;
    mistakes are ranked by ``proba.max(1)`` (the probability given to the wrong class), descending.
    Returns fewer than ``n`` indices (possibly none) when there are fewer mistakes.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    p = _proba(proba)
    t = _labels(y_true, "y_true", p.shape[1])
    _same_length(y_true=t, proba=p)
    pred = p.argmax(axis=1)
    wrong = np.flatnonzero(pred != t)
    conf = p[wrong, pred[wrong]]
    order = np.argsort(-conf, kind="stable")[: int(n)]
    return wrong[order].astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------


def sample_grid(images, labels, path=None, n: int = 40, cols: int = 10, title: str = "Kannada-MNIST samples",
                class_names=None):
    """A grid of the first ``n`` images (grey or colour) with each one's label (its class name, given
    ``class_names``) above it. Returns the Figure (written to ``path`` as PNG when given)."""
    imgs = _images(images)
    labs = _labels(labels, "labels")
    _same_length(images=imgs, labels=labs)
    n = _positive_int(n, "n")
    cols = _positive_int(cols, "cols")
    if len(imgs) == 0:
        raise ValueError("images is empty; nothing to plot")
    count = min(n, len(imgs))
    imgs, labs = imgs[:count], labs[:count]
    vmin, vmax = _image_range(imgs)
    rows, cols = _grid_shape(count, cols)

    fig = _new_figure((1.1 * cols + 0.3, 1.25 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    for ax, img, lab in zip(axes.flat, imgs, labs):
        _show(ax, img, vmin, vmax)
        ax.set_title(_name(class_names, lab), fontsize=10)
        ax.set_axis_off()
    _hide_unused(axes, count)
    fig.suptitle(title, fontsize=13)
    return _finish(fig, path)


def _series(history: dict, key: str, length: int | None):
    if key not in history or history[key] is None:
        return None
    arr = _as_host(history[key], f"history[{key!r}]")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"history[{key!r}] must be a sequence of numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"history[{key!r}] must be 1-D (one value per epoch); got shape {arr.shape}")
    if arr.size == 0:
        return None
    if length is not None and arr.size != length:
        raise ValueError(f"history[{key!r}] has {arr.size} epochs but the training series has {length}")
    return arr


def training_curves(history, path=None, test=None):
    """Two panels, loss and accuracy per (1-based) epoch, training vs validation, and the final test score.

    ``history`` is a dict like ``{"loss": [...], "accuracy": [...], "val_loss": [...],
    "val_accuracy": [...]}`` (the ``val_*`` series are optional) or an object with such a dict in
    ``.history`` (portacnn's / Keras' ``History``). ``test`` is the score on the test set after training, e.g.
    ``model.evaluate(x_test, y_test)`` (``{"accuracy": 0.932, "loss": 0.25, ...}``; either key may be missing,
    other keys are ignored): each of its values is drawn as a dotted horizontal line labelled "test" across its
    panel, and written in the panel's title, so a gap between training and test is seen even without validation.
    Returns the Figure (written to ``path`` as PNG when given).
    """
    if hasattr(history, "history") and isinstance(history.history, dict):
        history = history.history
    if not isinstance(history, dict):
        raise ValueError(f"history must be a dict of per-epoch lists; got {type(history).__name__}")
    panels = []
    for key, label in (("loss", "loss"), ("accuracy", "accuracy")):
        train = _series(history, key, None)
        val = _series(history, f"val_{key}", None if train is None else train.size)
        panels.append((key, label, train, val))
    if all(train is None and val is None for _, _, train, val in panels):
        raise ValueError("history has no non-empty 'loss', 'accuracy', 'val_loss' or 'val_accuracy' series")
    scores = _test_scores(test)

    fig = _new_figure((10, 4))
    axes = fig.subplots(1, 2)
    for ax, (key, label, train, val) in zip(axes, panels):
        score = scores.get(key)
        if train is None and val is None:
            ax.text(0.5, 0.5, f"no {label} recorded per epoch", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            if score is None:
                ax.set_yticks([])
        for series, name, style in ((train, "train", "o-"), (val, "validation", "s--")):
            if series is not None:
                epochs = np.arange(1, series.size + 1)
                ax.plot(epochs, series, style, label=name, markersize=4)
        if score is not None:  # one value, after the last epoch: a line across the panel
            ax.axhline(score, color="tab:red", linestyle=":", linewidth=2, label="test")
        if train is not None or val is not None:
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        if train is not None or val is not None or score is not None:
            ax.set_ylabel(label)
            ax.legend()
        shown = "" if score is None else f" (test {score:.2%})" if key == "accuracy" else f" (test {score:.4f})"
        ax.set_title(f"{label} per epoch{shown}")
    fig.suptitle("Training curves", fontsize=13)
    return _finish(fig, path)


def _test_scores(test) -> dict:
    """``{"loss": float, "accuracy": float}`` (the keys ``test`` has) of a test result; {} for None."""
    if test is None:
        return {}
    if not isinstance(test, dict):
        raise ValueError(f"test must be a dict like {{'accuracy': 0.93, 'loss': 0.25}} (what model.evaluate "
                         f"returns) or None; got {type(test).__name__}")
    return {key: check(test[key], Real(), f"test[{key!r}]") for key in ("loss", "accuracy")
            if test.get(key) is not None}


def confusion_matrix(y_true, y_pred, path=None, num_classes: int = 10, class_names=None):
    """The confusion-matrix counts as an image, with each count written in its cell; the axes name the classes
    (``class_names``, else their ids). Returns the Figure (written to ``path`` as PNG when given)."""
    counts = confusion_counts(y_true, y_pred, num_classes)
    if class_names is not None and len(class_names) != counts.shape[0]:
        raise ValueError(f"class_names holds {len(class_names)} names for {counts.shape[0]} classes")
    c = counts.shape[0]
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")

    size = min(max(4.5, 0.55 * c + 2.0), 20.0)
    fig = _new_figure((size + 1.0, size))
    ax = fig.subplots()
    im = ax.imshow(counts, cmap="Blues", interpolation="nearest", vmin=0, vmax=max(1, int(counts.max())))
    from matplotlib.ticker import MaxNLocator  # matplotlib is known importable once _new_figure succeeded

    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="count", ticks=MaxNLocator(integer=True))
    fontsize = max(5, min(10, int(110 / max(c, 1))))
    threshold = counts.max() / 2.0
    for (t, p), v in np.ndenumerate(counts):  # loops over C*C cells, not over samples
        ax.text(p, t, str(v), ha="center", va="center", fontsize=fontsize,
                color="white" if v > threshold else "black")
    ticks = np.arange(c)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if class_names is not None:
        ax.set_xticklabels([str(n) for n in class_names], rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticklabels([str(n) for n in class_names], fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "Confusion matrix"
    if total:
        title += f" (accuracy {accuracy:.2%}, n={total})"
    ax.set_title(title)
    return _finish(fig, path)


def conv_filters(weight, path=None, max_filters: int = 128):
    """First conv layer's kernels, one small image per (out channel, in channel).

    ``weight`` is ``(O, C, kh, kw)``. A diverging colormap shared by all kernels is centred at 0
    (blue negative, red positive). At most ``max_filters`` kernels are drawn. Returns the Figure (written to
    ``path`` as PNG when given).
    """
    w = _as_host(weight, "weight")
    if w.ndim != 4:
        raise ValueError(f"weight must have shape (out_channels, in_channels, kh, kw); got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"weight must be numeric; got dtype {w.dtype}")
    max_filters = _positive_int(max_filters, "max_filters")
    o, c = w.shape[:2]
    if o * c == 0:
        raise ValueError(f"weight has no kernels; got shape {w.shape}")
    w = w.astype(np.float64)
    kernels = w.reshape(o * c, *w.shape[2:])[:max_filters]
    names = [f"filter {k}" if c == 1 else f"filter {k}\nin {i}" for k in range(o) for i in range(c)][:max_filters]
    count = len(kernels)
    cols = c if 1 < c <= 8 else 8
    rows, cols = _grid_shape(count, cols)
    finite = np.abs(kernels[np.isfinite(kernels)])
    m = float(finite.max()) if finite.size else 0.0
    m = m if m > 0 else 1.0

    fig = _new_figure((1.25 * cols + 1.2, (1.45 if c > 1 else 1.3) * rows + 0.7))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    im = None
    for ax, kern, name in zip(axes.flat, kernels, names):
        im = ax.imshow(kern, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    _hide_unused(axes, count)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    shown = f" (first {count} of {o * c})" if count < o * c else ""
    fig.suptitle(f"First conv layer filters, {o}x{c}x{w.shape[2]}x{w.shape[3]}{shown}", fontsize=12)
    return _finish(fig, path)


def worst_mistakes(images, y_true, proba, path=None, n: int = 16, cols: int = 8, class_names=None):
    """The ``n`` misclassified images whose wrong prediction was most confident.

    Each is titled ``"true t / pred p (0.97)"``. With no mistakes the figure says so. Returns the Figure
    (written to ``path`` as PNG when given).
    """
    imgs = _images(images)
    p = _proba(proba)
    t = _labels(y_true, "y_true", p.shape[1])
    _same_length(images=imgs, y_true=t, proba=p)
    n = _positive_int(n, "n")
    cols = _positive_int(cols, "cols")
    idx = worst_mistake_indices(t, p, n)
    if idx.size == 0:
        fig = _new_figure((6, 2.5))
        ax = fig.subplots()
        msg = f"No misclassified images among {len(t)} samples" if len(t) else "No samples to inspect"
        ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=13, transform=ax.transAxes)
        ax.set_axis_off()
        fig.suptitle("Worst mistakes", fontsize=13)
        return _finish(fig, path)

    shown = imgs[idx]
    pred = p[idx].argmax(axis=1)
    conf = p[idx, pred]
    vmin, vmax = _image_range(shown)
    rows, cols = _grid_shape(idx.size, cols)
    fig = _new_figure((1.75 * cols + 0.3, 1.85 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    for ax, img, tt, pp, cc in zip(axes.flat, shown, t[idx], pred, conf):
        _show(ax, img, vmin, vmax)
        ax.set_title(f"true {_name(class_names, tt)} / pred {_name(class_names, pp)} ({float(cc):.2f})", fontsize=8)
        ax.set_axis_off()
    _hide_unused(axes, idx.size)
    fig.suptitle(f"Most confident mistakes ({idx.size} shown)", fontsize=13)
    return _finish(fig, path)


# -- what the network looks at (the maps come from portacnn.explain) ---------------------------------------------


def _one_image(image, name: str = "image") -> np.ndarray:
    """One image on the host: (H, W) grey or (H, W, 3) colour, from (H, W), (1, H, W), (3, H, W), (H, W, 3) or a
    batch of one (1, C, H, W)."""
    arr = _as_host(image, name)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be one image: (H, W), (C, H, W) or (H, W, C) with C 1 or 3; got shape "
                         f"{arr.shape}")
    return _images(arr[None], name)[0]


def _heat_map(values, name: str, shape) -> np.ndarray:
    """A finite real (H, W) map of the image's ``shape`` (H, W), as float64."""
    arr = _as_host(values, name)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array; got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have the image's shape {tuple(shape)} (H, W); got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def feature_maps(maps, path=None, max_maps: int = 64, cols: int = 8, title: str = "Feature maps"):
    """A layer's activations for one image, ``maps`` (C, H, W) (:func:`portacnn.explain.feature_maps`): one small
    image per channel, titled with its index, all on one colour scale (viridis from the smallest to the largest
    value, with a colour bar), so a channel that responds weakly looks weak. At most ``max_maps`` channels are
    drawn. Returns the Figure (written to ``path`` as PNG when given)."""
    m = _as_host(maps, "maps")
    if m.ndim != 3:
        raise ValueError(f"maps must have shape (C, H, W), one map per channel; got shape {m.shape} (a layer with "
                         "flat output has no maps to draw)")
    if m.dtype == bool or not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
        raise ValueError(f"maps must be a real array; got dtype {m.dtype}")
    max_maps = _positive_int(max_maps, "max_maps")
    cols = _positive_int(cols, "cols")
    if m.shape[0] == 0:
        raise ValueError("maps holds no channel; nothing to plot")
    count = min(m.shape[0], max_maps)
    shown = m[:count].astype(np.float64)
    vmin, vmax = _image_range(shown)
    rows, cols = _grid_shape(count, cols)

    fig = _new_figure((max(1.3 * cols + 1.2, 5.0), 1.4 * rows + 1.0))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    im = None
    for k, (ax, fmap) in enumerate(zip(axes.flat, shown)):
        im = ax.imshow(fmap, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"channel {k}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    _hide_unused(axes, count)
    fig.colorbar(im, ax=axes, shrink=0.8, label="activation")
    more = f", the first {count} shown" if count < m.shape[0] else ""
    fig.suptitle(f"{title}\n{m.shape[0]} maps of {m.shape[1]}x{m.shape[2]}{more}", fontsize=11)
    return _finish(fig, path)


def _overlay(image, heat, path, title: str, heat_title: str, cmap: str, label: str, alpha: float):
    """Three panels: the image, the map ``heat`` on its own (0 to its maximum, with a colour bar), the map over a
    grey copy of the image."""
    img = _one_image(image)
    h = _heat_map(heat, "map", img.shape[:2])
    alpha = check(alpha, Real(0.0, 1.0), "alpha")
    vmin, vmax = _image_range(img)
    top = float(h.max()) if h.size and h.max() > 0 else 1.0
    grey = img if img.ndim == 2 else img.astype(np.float64).mean(axis=-1)

    fig = _new_figure((10, 3.8))
    axes = fig.subplots(1, 3)
    _show(axes[0], img, vmin, vmax)
    axes[0].set_title("image")
    im = axes[1].imshow(h, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
    axes[1].set_title(heat_title if h.any() else f"{heat_title}\n(all zero)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label=label)
    axes[2].imshow(grey, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    axes[2].imshow(h, cmap=cmap, vmin=0.0, vmax=top, alpha=alpha, interpolation="bilinear")
    axes[2].set_title("over the image")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=13)
    return _finish(fig, path)


def saliency(image, saliency_map, path=None, title: str = "Saliency", alpha: float = 0.6):
    """The image, its saliency map (:func:`portacnn.explain.saliency`: how strongly each pixel changes the class
    score; "hot" colours from 0 to the map's maximum) and the map over the image. ``image`` is the picture as the
    model read it, raw (uint8) or float, (H, W), (C, H, W) or (H, W, C); the map (H, W). Returns the Figure (written
    to ``path`` as PNG when given)."""
    return _overlay(image, saliency_map, path, title, "|d score / d pixel|", "hot", "gradient magnitude", alpha)


def grad_cam(image, cam, path=None, title: str = "Grad-CAM", alpha: float = 0.5):
    """The image, its Grad-CAM map (:func:`portacnn.explain.grad_cam`: where the evidence for the class lies, in
    [0, 1]; "jet" colours) and the map over the image. ``image`` as in :func:`saliency`, the map (H, W). Returns
    the Figure (written to ``path`` as PNG when given)."""
    return _overlay(image, cam, path, title, "class activation map", "jet", "relevance", alpha)


def save_all(out_dir, history=None, model_weight=None, images=None, y_true=None, proba=None,
             sample_images=None, sample_labels=None, class_names=None, title: str = "Kannada-MNIST samples",
             test=None) -> list[Path]:
    """Write whichever plots the given inputs allow into ``out_dir``; return the paths written (the figures are
    released once written).

    * ``samples.png``   from ``sample_images`` + ``sample_labels``
      (falling back to ``images`` + ``y_true`` when no sample arrays are given)
    * ``curves.png``    from ``history`` (with the final ``test`` score, see :func:`training_curves`)
    * ``confusion.png`` from ``y_true`` + ``proba`` (predictions are ``proba.argmax(1)``)
    * ``filters.png``   from ``model_weight`` (first conv layer, ``(O, C, kh, kw)``)
    * ``mistakes.png``  from ``images`` + ``y_true`` + ``proba``
    """
    if (sample_images is None) != (sample_labels is None):
        missing = "sample_labels" if sample_labels is None else "sample_images"
        raise ValueError(f"{missing} is required when the other sample argument is given")
    if not plots_available():
        raise PlotUnavailable(_MISSING_MESSAGE)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def draw(plot, name, *args, **kwargs):
        path = out / name
        plot(*args, path=path, **kwargs).clear()  # written; its artists dropped now rather than at the next GC
        written.append(path)

    if sample_images is not None:
        draw(sample_grid, "samples.png", sample_images, sample_labels, title=title, class_names=class_names)
    elif images is not None and y_true is not None:
        draw(sample_grid, "samples.png", images, y_true, title=title, class_names=class_names)
    if history is not None:
        draw(training_curves, "curves.png", history, test=test)
    if y_true is not None and proba is not None:
        p = _proba(proba)
        draw(confusion_matrix, "confusion.png", y_true, p.argmax(axis=1), num_classes=p.shape[1],
             class_names=class_names)
    if model_weight is not None:
        draw(conv_filters, "filters.png", model_weight)
    if images is not None and y_true is not None and proba is not None:
        draw(worst_mistakes, "mistakes.png", images, y_true, proba, class_names=class_names)
    return written
