"""Which images train and which test: the split policy of the ``portacnn`` command line.

:func:`load_split` reads one split (``"train"`` or ``"test"``) of the embedded Kannada-MNIST or of a
``--data`` path, as a :class:`Split`. A folder is recognised by its content, in this order:

* IDX files (names holding ``images``/``idx3`` and ``labels``/``idx1``): files named for the split are that
  split exactly; one images/labels pair of any prefix serves both splits;
* CIFAR binary files (``data_batch_<k>.bin`` and ``test_batch.bin``, or ``train.bin`` and ``test.bin``): exact
  splits when both are there, else the files there serve both;
* subfolders of images, one per class (:mod:`~portacnn.data.image_folder`): ``train/`` and ``test/`` (or
  ``val/``) subfolders are exact splits, a plain class root serves both.

A file is a CIFAR ``.bin`` file (by its suffix; the format has no signature), a Keras-style ``.npz``
(``x_train``, ``y_train``, ``x_test``, ``y_test``: exact splits), or any single CSV/.npz/IDX-images file,
which serves both splits. :func:`train_test` builds the training and test sets from that: the full training
split and the test split when the data have one, else a seeded 10 % of the training data held out as the test
set; the tutorial protocol (600 train / 100 held out per class,
:func:`~portacnn.data.catalogue.tutorial_split`, Kannada-MNIST only); and a ``limit`` on the training images.
Only image folders are resized or converted (``size=``, ``channels=``); for any other source a ``size`` or
``channels`` that differs from the data's is an error, never a silent resize. Problems are one-line
:class:`~portacnn.data.errors.DataError` messages naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .catalogue import load_kannada_mnist, tutorial_split
from .cifar import cifar_files, load_cifar
from .errors import DataError, DataFileNotFoundError, _fail
from .folders import _is_images_name, _is_labels_name, _list_folder, find_idx_pair
from .idx import open_idx
from .image_folder import _subfolders, image_folder_splits, load_image_folder
from .images import _check_channels, _image_size
from .layout import to_channels_first
from .npz import is_keras_npz, load_npz
from .preprocessing import preprocess
from .sniff import open_any


class Split(NamedTuple):
    """One split of a data source, as :func:`load_split` reads it."""

    images: Any
    """uint8 ``(N, H, W)`` greyscale or channels-first ``(N, C, H, W)``; an
    :class:`~portacnn.data.idx.IdxImages` (read when sliced) for a plain IDX file."""
    labels: np.ndarray | None
    """int64 ``(N,)``, or None when the source has no labels."""
    exact: bool
    """True when the data really are that split; False when the source has no splits and serves both."""
    class_names: list[str] | None
    """The class names (label ``i`` is ``class_names[i]``), or None when the source has none."""


def _read_pair(images_path, labels_path):
    """(images, labels) of an IDX pair; the images of a plain file stay on disk until sliced."""
    return open_idx(images_path, labels_path)


def folder_kind(folder: Path) -> str:
    """``"idx"``, ``"cifar"`` or ``"images"``: what a data folder holds, by content (see the module docstring)."""
    if any(_is_images_name(f.name.lower()) or _is_labels_name(f.name.lower()) for f in _list_folder(folder)):
        return "idx"
    if cifar_files(folder) is not None:
        return "cifar"
    if _subfolders(folder):
        return "images"
    raise _fail(folder, "is not a data folder: expected IDX files (train-images-idx3-ubyte, "
                "train-labels-idx1-ubyte, ...), CIFAR binary files (data_batch_1.bin .. test_batch.bin, or "
                "train.bin and test.bin), or one subfolder of images per class (optionally inside train/ and "
                "test/)")  # fmt: skip


def _chw(images) -> tuple[int, int, int]:
    shape = tuple(images.shape)
    return (1, *shape[1:]) if len(shape) == 3 else shape[1:]


def _check_fit(split: Split, where, size, channels) -> Split:
    """``split`` when its images have ``size`` (H, W) and ``channels`` (None: any); else a DataError."""
    c, h, w = _chw(split.images)
    if size is not None and (h, w) != size:
        raise _fail(where, f"images are {h}x{w} (HxW), not the size={size} asked for",
                    "only image folders are resized: drop size= (--image-size) or resize the images yourself "
                    "(portacnn.data.resize_images)")  # fmt: skip
    if channels is not None and c != channels:
        raise _fail(where, f"images have {c} channel{'s' if c > 1 else ''}, not the channels={channels} asked for",
                    "only image folders are converted: drop channels= (--channels)")  # fmt: skip
    return split


def _check_label_floor(labels, path) -> None:
    if labels is not None and labels.size and int(labels.min()) < 0:
        i = int(np.flatnonzero(labels < 0)[0])
        raise _fail(path, f"label {int(labels[i])} at index {i} is negative", "labels are class indices 0, 1, ...")


def _load_folder(p: Path, split: str, any_pair: bool, size, channels) -> Split | None:
    kind = folder_kind(p)
    if kind == "images":  # the one source that is resized and converted
        if image_folder_splits(p) is not None:
            images, labels, names = load_image_folder(p, split, size=size, channels=channels)
            return Split(images, labels, True, names)
        if not any_pair:
            return None
        images, labels, names = load_image_folder(p, size=size, channels=channels)
        return Split(images, labels, False, names)
    if kind == "cifar":
        files = cifar_files(p)[1]
        exact = bool(files["train"] and files["test"])
        if not exact and not any_pair:
            return None
        images, labels, names = load_cifar(p, split if files[split] else {"train": "test", "test": "train"}[split])
        return _check_fit(Split(images, labels, exact, names), p, size, channels)
    try:
        pair = find_idx_pair(p, split)
    except DataError:  # no files named for the split; a broken file is reported, not skipped
        if not any_pair:
            return None
        return _check_fit(Split(*_read_pair(*find_idx_pair(p)), False, None), p, size, channels)
    return _check_fit(Split(*_read_pair(*pair), True, None), p, size, channels)


def is_image_folder(path) -> bool:
    """Whether ``path`` is a folder of image classes: the one source :func:`load_split` resizes and converts to a
    ``size`` and ``channels`` (any other is only checked against them). False for anything else, unreadable
    or not (reading it says what is wrong)."""
    try:
        return path is not None and Path(path).is_dir() and folder_kind(Path(path)) == "images"
    except (DataError, OSError):
        return False


def load_split(path: str | None, split: str, any_pair: bool = True, *, size=None, channels: int | None = None):
    """``Split(images, labels, exact, class_names)`` for ``split`` of the embedded data set or of ``path``.

    ``path`` is a data folder or file (see the module docstring). ``exact`` is True when the data really are
    that split (the embedded set, a folder with files or subfolders for the split, a Keras-style ``.npz``); a
    source without splits gives the same data for both (exact False), or None with ``any_pair=False``.
    ``size`` ``(H, W)`` and ``channels`` (1 or 3) are passed to the image-folder reader; any other source whose
    images differ from them is a :class:`DataError`. ``class_names`` is None when the source names no classes.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    _check_channels(channels)
    size = _image_size(size)
    if path is None:
        x, y = load_kannada_mnist(split)
        return _check_fit(Split(x, y, True, None), "the embedded Kannada-MNIST", size, channels)
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file or folder", cls=DataFileNotFoundError)
    if p.is_dir():
        return _load_folder(p, split, any_pair, size, channels)
    if p.suffix.lower() == ".bin":  # CIFAR binary: no signature, recognised by the suffix
        if not any_pair:
            return None
        images, labels, names = load_cifar(p)
        return _check_fit(Split(images, labels, False, names), path, size, channels)
    if is_keras_npz(p):
        x, y = load_npz(p, num_classes=None, split=split)
        _check_label_floor(y, path)
        return _check_fit(Split(x, y, True, None), path, size, channels)
    if not any_pair:
        return None
    x, y = open_any(p)
    return _check_fit(Split(x, y, False, None), path, size, channels)


def _raw(images) -> np.ndarray:
    """uint8 images as the contiguous channels-first ``(N, C, H, W)`` array ``raw=True`` returns."""
    return np.ascontiguousarray(to_channels_first(np.asarray(images)))


def train_test(path: str | None, protocol: str = "full", seed: int = 0, limit: int | None = None, *, size=None,
               channels: int | None = None, raw: bool = False):  # fmt: skip
    """``((x_train, y_train), (x_test, y_test), extra, note)`` as the command line's train command uses them.

    ``path`` is ``--data`` (None: the embedded Kannada-MNIST), ``protocol`` ``"full"`` or ``"tutorial"``
    (Kannada-MNIST only), ``seed`` seeds the tutorial split and the 10 % hold-out, ``limit`` keeps only the
    first training images. ``size`` ``(H, W)`` and ``channels`` (1 or 3) go to the image-folder reader (a
    test split is read with the training split's channels, and must have its size); any other source must
    already have them (see :func:`load_split`). The images come preprocessed (float32 ``(N, C, H, W)``, see
    :func:`~portacnn.data.preprocessing.preprocess`), or with ``raw=True`` as uint8 channels-first
    ``(N, C, H, W)``. ``extra`` holds ``"class_names"`` (a list, or None when the source names no classes)
    and, for the tutorial protocol, ``"heldout"`` (images as the others, labels); ``note`` says where the
    data came from.
    """
    _check_channels(channels)
    size = _image_size(size)
    where = path if path is not None else "the embedded Kannada-MNIST"
    if protocol == "tutorial":
        (xtr, ytr), held = tutorial_split(seed=seed, root=path)
        _check_fit(Split(xtr, ytr, True, None), where, size, channels)
        class_names, note = None, "tutorial protocol: 600 train / 100 held-out images per class from the training set"
        test = load_split(path, "test", any_pair=False, size=size, channels=channels)
    else:
        held = None
        xtr, ytr, exact, class_names = load_split(path, "train", size=size, channels=channels)
        if ytr is None:
            raise _fail(where, "holds no labels, so it cannot be used for training")
        note = "full training set"
        if channels is None and path is not None and Path(path).is_dir() and folder_kind(Path(path)) == "images":
            channels = _chw(xtr)[0]  # an image folder's test split is read with the training split's channels
        test = load_split(path, "test", any_pair=False, size=size, channels=channels) if exact else None
    if test is not None:
        xte, yte = test.images, test.labels
        if yte is None:
            raise _fail(where, "the test split holds no labels")
        if _chw(xte) != _chw(xtr):
            (c, h, w), (ct, ht, wt) = _chw(xtr), _chw(xte)
            hint = (f"pass an image size, e.g. size=({h}, {w}) (--image-size {h} {w} on the command line)"
                    if (h, w) != (ht, wt) else None)
            raise _fail(where, f"the test images are {ct}x{ht}x{wt} (CxHxW) but the training images {c}x{h}x{w}",
                        hint)  # fmt: skip
    else:
        # a single CSV/npz or one images/labels pair: hold out a seeded 10 % of it as the test set
        rng = np.random.default_rng([seed, 1])
        order = rng.permutation(len(ytr))
        cut = max(1, len(ytr) // 10)
        xte, yte, xtr, ytr = xtr[order[:cut]], ytr[order[:cut]], xtr[order[cut:]], ytr[order[cut:]]
        note += f"; {where} has no separate test split, so 10 % of it is held out as the test set"
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    if len(ytr) == 0:
        raise _fail(where, "no training images left after holding out the test set")
    prepare = _raw if raw else preprocess
    extra = {} if held is None else {"heldout": (prepare(held[0]), held[1])}
    extra["class_names"] = class_names
    return (prepare(xtr), ytr), (prepare(xte), yte), extra, note
