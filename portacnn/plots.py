"""Diagnostic plots: sample digits, training curves, confusion matrix, first-layer filters, worst mistakes.

matplotlib is an optional extra (``pip install 'portacnn[plot]'``). It is imported lazily, inside the
functions that draw, so ``import portacnn.plots`` always works; drawing without matplotlib raises
:class:`PlotUnavailable`. The pure-NumPy helpers (:func:`confusion_counts`,
:func:`worst_mistake_indices`) never need it.

Figures are built with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` rather than pyplot, so no
global backend is selected, no GUI is touched and nothing is left registered in pyplot's figure
manager. Every PNG is written atomically: rendered in memory, written to a temporary file in the destination folder,
then renamed into place, so a reader never sees a half-written file.

All functions take host (NumPy) arrays; bring device arrays back first (e.g. ``backend.to_numpy``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from .backend import to_host
from .validation import Integer, check

__all__ = [
    "PlotUnavailable", "plots_available", "sample_grid", "training_curves", "confusion_matrix",
    "confusion_counts", "conv_filters", "worst_mistakes", "worst_mistake_indices", "save_all",
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
    return fig


def _save(fig, path) -> Path:
    """Render ``fig`` to ``path`` as PNG atomically (see :func:`portacnn._atomic.atomic_write`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    finally:
        fig.clear()  # drop artists now; the Figure is not registered anywhere, so GC frees the rest
    atomic_write(path, buffer.getvalue())
    return path

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


def sample_grid(images, labels, path, n: int = 40, cols: int = 10, title: str = "Kannada-MNIST samples",
                class_names=None) -> Path:
    """A grid of the first ``n`` images (grey or colour) with each one's label (its class name, given
    ``class_names``) above it."""
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
    return _save(fig, path)


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


def training_curves(history, path) -> Path:
    """Two panels, loss and accuracy per (1-based) epoch, training vs validation.

    ``history`` is a dict like ``{"loss": [...], "accuracy": [...], "val_loss": [...],
    "val_accuracy": [...]}`` (the ``val_*`` series are optional) or an object with such a dict in
    ``.history`` (portacnn's / Keras' ``History``).
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

    fig = _new_figure((10, 4))
    axes = fig.subplots(1, 2)
    for ax, (key, label, train, val) in zip(axes, panels):
        if train is None and val is None:
            ax.text(0.5, 0.5, f"no {label} recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        for series, name, style in ((train, "train", "o-"), (val, "validation", "s--")):
            if series is not None:
                epochs = np.arange(1, series.size + 1)
                ax.plot(epochs, series, style, label=name, markersize=4)
        if train is not None or val is not None:
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend()
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"{label} per epoch")
    fig.suptitle("Training curves", fontsize=13)
    return _save(fig, path)


def confusion_matrix(y_true, y_pred, path, num_classes: int = 10, class_names=None) -> Path:
    """The confusion-matrix counts as an image, with each count written in its cell; the axes name the classes
    (``class_names``, else their ids)."""
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
    return _save(fig, path)


def conv_filters(weight, path, max_filters: int = 128) -> Path:
    """First conv layer's kernels, one small image per (out channel, in channel).

    ``weight`` is ``(O, C, kh, kw)``. A diverging colormap shared by all kernels is centred at 0
    (blue negative, red positive). At most ``max_filters`` kernels are drawn.
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
    return _save(fig, path)


def worst_mistakes(images, y_true, proba, path, n: int = 16, cols: int = 8, class_names=None) -> Path:
    """The ``n`` misclassified images whose wrong prediction was most confident.

    Each is titled ``"true t / pred p (0.97)"``. With no mistakes the figure says so.
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
        return _save(fig, path)

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
    return _save(fig, path)


def save_all(out_dir, history=None, model_weight=None, images=None, y_true=None, proba=None,
             sample_images=None, sample_labels=None, class_names=None, title: str = "Kannada-MNIST samples") -> list[Path]:
    """Write whichever plots the given inputs allow into ``out_dir``; return the paths written.

    * ``samples.png``   from ``sample_images`` + ``sample_labels``
      (falling back to ``images`` + ``y_true`` when no sample arrays are given)
    * ``curves.png``    from ``history``
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
    if sample_images is not None:
        written.append(sample_grid(sample_images, sample_labels, out / "samples.png", title=title,
                                   class_names=class_names))
    elif images is not None and y_true is not None:
        written.append(sample_grid(images, y_true, out / "samples.png", title=title, class_names=class_names))
    if history is not None:
        written.append(training_curves(history, out / "curves.png"))
    if y_true is not None and proba is not None:
        p = _proba(proba)
        written.append(confusion_matrix(y_true, p.argmax(axis=1), out / "confusion.png", num_classes=p.shape[1],
                                        class_names=class_names))
    if model_weight is not None:
        written.append(conv_filters(model_weight, out / "filters.png"))
    if images is not None and y_true is not None and proba is not None:
        written.append(worst_mistakes(images, y_true, proba, out / "mistakes.png", class_names=class_names))
    return written
