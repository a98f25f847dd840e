"""The Kannada-MNIST copy shipped inside the package and the protocols built on it:
:data:`EMBEDDED_DATA_DIR`, :func:`embedded_data_dir`, :func:`load_kannada_mnist`, :func:`tutorial_split`.

A copy of Kannada-MNIST (60,000 training and 10,000 test images of the handwritten Kannada digits 0-9,
28 x 28, in IDX format) ships inside the package in ``portacnn/data/kannada_mnist/``;
:func:`load_kannada_mnist` reads it when no ``root`` is given. See the README.md in that folder for
provenance (the training images were regenerated from the author's published scans) and checksums.
Cite the dataset as:

    Prabhu, Vinay Uday. "Kannada-MNIST: A new handwritten digits dataset for the Kannada language."
    arXiv preprint arXiv:1908.01242 (2019).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError, DataFileNotFoundError, _fail
from .folders import find_idx_pair
from .idx import load_idx
from .sniff import _sniff, load_any

EMBEDDED_DATA_DIR = Path(__file__).resolve().parent / "kannada_mnist"
"""Folder of the Kannada-MNIST copy shipped inside the package."""


def embedded_data_dir() -> Path:
    """The folder of the Kannada-MNIST copy shipped inside the package."""
    return EMBEDDED_DATA_DIR


def load_kannada_mnist(split: str = "train", root=None, num_classes: int | None = 10):
    """Load Kannada-MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000 images, the ``t10k`` files).
    ``root=None`` reads the copy embedded in the package (:data:`EMBEDDED_DATA_DIR`). Otherwise
    ``root`` may be a folder holding IDX files for the split (names of any prefix that contain
    ``train`` / ``t10k`` or ``test`` and ``images`` / ``idx3`` or ``labels`` / ``idx1``, e.g.
    ``train-images-idx3-ubyte.gz`` or ``X_kannada_MNIST_train-idx3-ubyte.gz``), a single CSV file in
    the Kaggle layout, or an ``.npz`` archive; a single file is returned whole, whatever ``split``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None:
        folder = embedded_data_dir()
        if not folder.is_dir():
            raise _fail(folder, "the embedded Kannada-MNIST copy is missing (package installed without its "
                        "data files?)", "reinstall portacnn or pass root= pointing to the IDX files",
                        cls=DataFileNotFoundError)  # fmt: skip
        root = folder
    rp = Path(root)
    if rp.is_dir():
        images_path, labels_path = find_idx_pair(rp, split)
        return load_idx(images_path, labels_path, num_classes=num_classes)
    if _sniff(rp) == "idx":
        raise _fail(root, "is a single IDX file; pass the folder holding both the images and the labels file")
    return load_any(rp, num_classes=num_classes)


def tutorial_split(seed: int = 0, per_class_train: int = 600, per_class_test: int = 100, root=None,
                   num_classes: int = 10):  # fmt: skip
    """The tutorial protocol: small disjoint train and held-out sets, both from the TRAINING split.

    For each class ``c`` in ``0..num_classes-1`` (in order), a permutation of the indices of class
    ``c`` is drawn from ``numpy.random.default_rng(seed)``; its first ``per_class_train`` entries go
    to the training set and the next ``per_class_test`` to the held-out set. Each set is then
    shuffled with the same generator. Returns ``((x_train, y_train), (x_test, y_test))`` with RAW
    ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels; pass the images through
    :func:`preprocess` before feeding a model. ``root`` is passed to :func:`load_kannada_mnist`.
    """
    if per_class_train < 0 or per_class_test < 0:
        raise ValueError("per_class_train and per_class_test must be >= 0")
    images, labels = load_kannada_mnist("train", root=root, num_classes=num_classes)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        need = per_class_train + per_class_test
        if idx.size < need:
            raise DataError(f"class {c} has only {idx.size} training images; the split needs {need} "
                            f"({per_class_train} train + {per_class_test} held out)")  # fmt: skip
        perm = rng.permutation(idx)
        train_idx.append(perm[:per_class_train])
        test_idx.append(perm[per_class_train:need])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return (images[tr], labels[tr]), (images[te], labels[te])
