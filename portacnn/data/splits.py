"""Which images train and which test: the split policy of the ``portacnn`` command line.

:func:`load_split` reads one split (``"train"`` or ``"test"``) of the embedded Kannada-MNIST or of a
``--data`` path: a folder whose IDX files are named for the split is that split exactly; a folder with
one images/labels pair of any prefix, or a single CSV/.npz/IDX-images file, serves both splits.
:func:`train_test` builds the training and test sets from that: the full training split and the test
split when the data have one, else a seeded 10 % of the training data held out as the test set; the
tutorial protocol (600 train / 100 held out per class, :func:`~portacnn.data.catalogue.tutorial_split`);
and a ``limit`` on the training images. Problems are one-line :class:`~portacnn.data.errors.DataError`
messages naming the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .catalogue import load_kannada_mnist, tutorial_split
from .errors import DataError, DataFileNotFoundError, _fail
from .folders import find_idx_pair
from .idx import open_idx
from .preprocessing import preprocess
from .sniff import open_any


def _read_pair(images_path, labels_path):
    """(images, labels) of an IDX pair; the images of a plain file stay on disk until sliced."""
    return open_idx(images_path, labels_path)


def load_split(path: str | None, split: str, any_pair: bool = True):
    """(images uint8 (N, H, W), labels or None, exact) for ``split`` of the embedded data set or of ``path``.

    ``path`` is a folder of IDX files or a single CSV/.npz/IDX-images file. ``exact`` is True when the data
    really are that split (the embedded set, or a folder with files named for the split); a folder holding
    one images/labels pair of any prefix, or a single file, gives the same data for both splits (exact
    False). With ``any_pair=False`` such a fallback returns None instead.
    """
    if path is None:
        x, y = load_kannada_mnist(split)
        return x, y, True
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file or folder", cls=DataFileNotFoundError)
    if p.is_dir():
        try:
            pair = find_idx_pair(p, split)
        except DataError:  # no files named for the split; a broken file is reported, not skipped
            if not any_pair:
                return None
            return (*_read_pair(*find_idx_pair(p)), False)
        return (*_read_pair(*pair), True)
    if not any_pair:
        return None
    x, y = open_any(p)
    return x, y, False


def train_test(path: str | None, protocol: str = "full", seed: int = 0, limit: int | None = None):
    """``((x_train, y_train), (x_test, y_test), extra, note)`` as the command line's train command uses them.

    ``path`` is ``--data`` (None: the embedded Kannada-MNIST), ``protocol`` ``"full"`` or ``"tutorial"``,
    ``seed`` seeds the tutorial split and the 10 % hold-out, ``limit`` keeps only the first training images.
    The images come preprocessed (float32, see :func:`~portacnn.data.preprocessing.preprocess`); ``extra``
    holds ``"heldout"`` (preprocessed images, labels) for the tutorial protocol, and ``note`` says where the
    data came from.
    """
    if protocol == "tutorial":
        (xtr, ytr), (xho, yho) = tutorial_split(seed=seed, root=path)
        extra = {"heldout": (preprocess(xho), yho)}
        note = "tutorial protocol: 600 train / 100 held-out images per class from the training set"
        test = load_split(path, "test", any_pair=False)
    else:
        xtr, ytr, exact = load_split(path, "train")
        if ytr is None:
            raise _fail(path, "holds no labels, so it cannot be used for training")
        extra, note = {}, "full training set"
        test = load_split(path, "test", any_pair=False) if exact else None
    if test is not None:
        xte, yte, _ = test
        if yte is None:
            raise _fail(path, "the test split holds no labels")
    else:
        # a single CSV/npz or one images/labels pair: hold out a seeded 10 % of it as the test set
        rng = np.random.default_rng([seed, 1])
        order = rng.permutation(len(ytr))
        cut = max(1, len(ytr) // 10)
        xte, yte, xtr, ytr = xtr[order[:cut]], ytr[order[:cut]], xtr[order[cut:]], ytr[order[cut:]]
        note += f"; {path} has no separate test split, so 10 % of it is held out as the test set"
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    if len(ytr) == 0:
        raise _fail(path, "no training images left after holding out the test set")
    return (preprocess(xtr), ytr), (preprocess(xte), yte), extra, note
