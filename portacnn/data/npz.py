"""NumPy ``.npz`` archives, read without pickle: :func:`load_npz`.

The archive holds the images under ``x``, ``images`` or ``X`` (else ``arr_0``) and optionally the labels
under ``y``, ``labels`` or ``Y`` (else ``arr_1``); or it is a Keras-style archive (what
``numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)`` writes from
``keras.datasets.*.load_data()``), whose ``x_train``/``y_train`` are the train split and
``x_test``/``y_test`` the test split. Images may be greyscale ``(N, H, W)``, ``(N, 1, H, W)``,
``(N, H, W, 1)`` or flattened ``(N, H*W)`` with a square ``H*W``, or colour ``(N, 3, H, W)`` or
``(N, H, W, 3)`` (channels read as :func:`~portacnn.data.layout.to_channels_first` reads them), of any
integer dtype with values in ``0..255``; greyscale images come back ``(N, H, W)``, colour ones
channels-first ``(N, 3, H, W)``. Labels are ``(N,)`` or ``(N, 1)`` (as Keras stores CIFAR's) integers.
The archive is read member by member in chunks: the sizes its ``.npy`` headers declare must match the
zip directory and fit ``PORTACNN_MAX_DATA_BYTES``, and the image sides they declare
``PORTACNN_MAX_IMAGE_SIDE``, before anything is inflated.
"""

from __future__ import annotations

import io

import math
import zipfile

import numpy as np

from . import limits
from ._checks import _check_image_side, _check_labels, _check_limit, _check_num_classes
from ._io import _ZIP_MAGIC, _check_file, _read_payload
from .errors import DataError, _fail
from .layout import channel_layout, _LayoutError

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""The keys of a Keras-style archive: the train split and the test split."""


def _pick_key(keys, preferred, fallback):
    for k in preferred:
        if k in keys:
            return k
    return fallback if fallback in keys else None


_MAX_NPY_HEADER = 1 << 16  # a .npy header is a short dict literal (numpy writes a few hundred bytes)
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(fp, path, key: str, member_size: int, used: int, rows: int | None = None):
    """``(shape, fortran_order, dtype, nbytes)`` from the ``.npy`` header at the start of ``fp``.

    The array must not hold Python objects, its ``nbytes`` plus the ``used`` bytes of arrays already
    read must fit the data limit, and its data must fill the rest of the member exactly
    (``member_size`` comes from the zip directory), so a forged shape allocates nothing.
    """
    version = np.lib.format.read_magic(fp)
    if version not in _NPY_HEADER_READERS:
        raise _fail(path, f"array {key!r} has .npy format version {version[0]}.{version[1]}; versions 1.0 "
                    f"and 2.0 are supported", "save with numpy.savez(path, x=images, y=labels)")  # fmt: skip
    length_bytes = fp.read(2 if version == (1, 0) else 4)
    length = int.from_bytes(length_bytes, "little")
    if length > _MAX_NPY_HEADER or length > member_size:  # numpy would read all of it before its own check
        raise _fail(path, f"array {key!r} has a .npy header of {length} bytes (at most {_MAX_NPY_HEADER}); the "
                    "archive is corrupt or hostile", "re-create the .npz file")  # fmt: skip
    header = fp.read(length)
    shape, fortran_order, dtype = _NPY_HEADER_READERS[version](io.BytesIO(length_bytes + header))
    if dtype.hasobject:
        raise _fail(path, f"cannot read .npz archive: array {key!r} holds Python objects (dtype {dtype})",
                    "object arrays are refused (no pickle); store plain integer arrays")  # fmt: skip
    if any(d < 0 for d in shape):
        raise _fail(path, f"array {key!r} has a negative dimension in its shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if rows is None:  # images: dtype, layout and sides checked from the header, before anything is read
        _image_layout(path, key, shape, dtype)
    elif not np.issubdtype(dtype, np.integer):
        raise _fail(path, f"array {key!r} has dtype {dtype}; labels must be integers")
    if rows is not None and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):  # before any read
        raise _fail(path, f"labels array {key!r} must be 1-D (N,) or (N, 1) with one label per image; got shape "
                    f"{shape}")  # fmt: skip
    if rows is not None and shape[0] != rows:
        raise _fail(path, f"count mismatch: labels array {key!r} holds {shape[0]} labels but the images array "
                    f"holds {rows} images")
    counted = nbytes if rows is None else math.prod(shape) * max(8, dtype.itemsize)  # labels become int64
    what = f"array {key!r} declares shape {shape} of {dtype}"
    if used:
        what = f"the arrays declare {used} + {counted} bytes ({what})"
    _check_limit(path, limits.MAX_DATA_BYTES, used + counted, what)
    stored = member_size - fp.tell()
    if stored != nbytes:
        problem = "is truncated" if stored < nbytes else "has data past the array"
        raise _fail(path, f"array {key!r} {problem}: its header declares shape {shape} of {dtype} = {nbytes} "
                    f"bytes but the archive member holds {stored}", "re-create the .npz file")  # fmt: skip
    return shape, fortran_order, dtype, nbytes


def _read_npy(zf: zipfile.ZipFile, name: str, path, key: str, used: int = 0, rows: int | None = None) -> np.ndarray:
    """Array ``key`` (member ``name``) of an open archive, inflated in chunks (see :func:`_npy_header`)."""
    info = zf.getinfo(name)
    with zf.open(info) as fp:
        shape, fortran_order, dtype, nbytes = _npy_header(fp, path, key, info.file_size, used, rows)
        data = _read_payload(fp, nbytes)
        if data.size != nbytes or fp.read(1):  # reading to the end also checks the member's CRC
            raise _fail(path, f"array {key!r}: the archive member does not hold the {nbytes} bytes its header "
                        f"declares", "re-create the .npz file")  # fmt: skip
    if dtype.itemsize == 0:
        return np.empty(shape, dtype=dtype)
    array = data.view(dtype)
    return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


def load_npz(path, num_classes: int | None = 10, split: str | None = None):
    """Load images (and labels, when present) from a ``.npz`` archive, without pickle.

    Images are read from key ``x``, ``images`` or ``X`` (else ``arr_0``); labels from ``y``,
    ``labels`` or ``Y`` (else ``arr_1``), or ``None`` when absent; ``split`` is then ignored (the whole
    archive). A Keras-style archive (any of the keys ``x_train``, ``y_train``, ``x_test``, ``y_test``)
    must hold all four, and ``split`` (``"train"`` or ``"test"``) says which pair to read. Returns
    ``(images, labels)``: ``uint8`` images ``(N, H, W)`` when greyscale, channels-first ``(N, 3, H, W)``
    when colour, and ``int64`` labels ``(N,)``. The two arrays together may declare at most
    ``PORTACNN_MAX_DATA_BYTES``; each is inflated in chunks, only up to what its header declares.
    Raises :class:`DataError`.
    """
    _check_num_classes(num_classes)
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    p = _check_file(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e
    if not head:
        raise _fail(path, "file is empty (0 bytes)", "re-create the .npz file")
    if head != _ZIP_MAGIC:
        raise _fail(path, "not an .npz archive (no zip signature)", "save with numpy.savez(path, x=..., y=...)")
    try:
        with zipfile.ZipFile(p) as zf:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}  # keys as numpy.load names them
            xk, yk = _npz_keys(path, list(names), split)
            images = _read_npy(zf, names[xk], path, xk)
            labels = None if yk is None else _read_npy(zf, names[yk], path, yk, used=images.nbytes,
                                                       rows=images.shape[0] if images.ndim else None)
    except DataError:
        raise
    except Exception as e:  # zipfile / numpy.lib.format raise many types on malformed archives
        raise _fail(path, f"cannot read .npz archive ({type(e).__name__}: {e})",
                    "object arrays are refused (no pickle); store plain integer arrays") from e  # fmt: skip
    images = _validate_image_array(images, path, xk)
    if labels is not None:
        labels = _validate_label_array(labels, path, yk, images.shape[0], num_classes)
    return images, labels


def is_keras_npz(path) -> bool:
    """Whether ``path`` is a ``.npz`` archive with any of the Keras keys (``x_train`` ...); reads only its
    zip directory. False for anything that is not a readable zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            keys = {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(k in keys for k in KERAS_KEYS)


def _npz_keys(path, keys: list[str], split) -> tuple[str, str | None]:
    """(images key, labels key or None) to read; a DataError listing the keys found and wanted."""
    if any(k in keys for k in KERAS_KEYS):
        missing = [k for k in KERAS_KEYS if k not in keys]
        if missing:
            raise _fail(path, f"Keras-style archive without {', '.join(missing)}: found keys {keys}; wanted "
                        f"{', '.join(KERAS_KEYS)}",
                        "save with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")  # fmt: skip
        if split is None:
            raise _fail(path, f"holds a train and a test split (keys {', '.join(KERAS_KEYS)})",
                        "read one of them: split='train' or split='test'")  # fmt: skip
        return f"x_{split}", f"y_{split}"
    xk = _pick_key(keys, ("x", "images", "X"), "arr_0")
    if xk is None:
        raise _fail(path, f"no images array in the archive (found keys {keys}); expected 'x' or 'images' (labels "
                    f"'y' or 'labels'), or the Keras keys {', '.join(KERAS_KEYS)}",
                    "save with numpy.savez(path, x=images, y=labels)")  # fmt: skip
    return xk, _pick_key(keys, ("y", "labels", "Y"), "arr_1")


_SAVE_HINT = ("save images as (N, H, W) or channels-first (N, C, H, W); x.transpose(0, 3, 1, 2) turns (N, H, W, C) "
              "into it")


def _image_layout(path, key, shape, dtype) -> tuple[int, int, int, str]:
    """``(C, H, W, kind)`` of the images an array of ``shape`` and ``dtype`` holds, ``kind`` ``"flat"``
    (``(N, H*W)`` with a square ``H*W``), ``"none"`` (``(N, H, W)``), ``"channels_first"`` or
    ``"channels_last"`` (``C`` 1 or 3, read as :func:`~portacnn.data.layout.to_channels_first` reads them);
    an integer dtype, ``H`` and ``W`` within ``PORTACNN_MAX_IMAGE_SIDE``; else a DataError. Needs only a
    ``.npy`` header: checked before the data are read."""
    if not np.issubdtype(dtype, np.integer):
        raise _fail(path, f"array {key!r} has dtype {dtype}; images must be integers in 0..255 (uint8)",
                    "store raw uint8 images; use preprocess() for scaling")  # fmt: skip
    shape = tuple(shape)
    if len(shape) == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1] or shape[1] == 0:
            raise _fail(path, f"array {key!r} has shape {shape}; a flattened image array needs a square "
                        f"number of columns (784 = 28x28)")  # fmt: skip
        c, h, w, kind = 1, side, side, "flat"
    else:
        try:
            kind = channel_layout(shape)
        except _LayoutError as e:
            if e.kind in ("rank", "channels"):
                raise _fail(path, f"array {key!r} has shape {shape}; expected (N, H, W), (N, H*W), or "
                            f"(N, C, H, W) / (N, H, W, C) with C = 1 or 3") from None  # fmt: skip
            raise _fail(path, f"array {key!r} {e.problem}", _SAVE_HINT) from None
        first = shape if kind == "channels_first" else (shape[0], 1, *shape[1:]) if kind == "none" else (
            shape[0], shape[3], *shape[1:3])  # channels-last
        c, h, w = first[1:]
    if shape[0] == 0 or 0 in (h, w):
        raise _fail(path, f"array {key!r} has shape {shape}; it holds no images")
    _check_image_side(path, h, w)
    return c, h, w, kind


def _validate_image_array(a: np.ndarray, path, key) -> np.ndarray:
    """Greyscale images as ``(N, H, W)``, colour ones as channels-first ``(N, 3, H, W)``, uint8, contiguous."""
    if not isinstance(a, np.ndarray):
        raise _fail(path, f"array {key!r} has dtype {type(a).__name__}; images must be integers in 0..255 (uint8)",
                    "store raw uint8 images; use preprocess() for scaling")  # fmt: skip
    c, h, w, kind = _image_layout(path, key, a.shape, a.dtype)
    if kind == "channels_last":
        a = a.transpose(0, 3, 1, 2)
    a = a.reshape(a.shape[0], h, w) if c == 1 else a
    if a.dtype != np.uint8:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise _fail(path, f"array {key!r} has values in {lo}..{hi}; images must be in 0..255")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def _validate_label_array(y: np.ndarray, path, key, n: int, num_classes) -> np.ndarray:
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        dt = getattr(y, "dtype", type(y).__name__)
        raise _fail(path, f"array {key!r} has dtype {dt}; labels must be integers")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _fail(path, f"array {key!r} has shape {y.shape}; labels must be 1-D (N,)")
    if y.shape[0] != n:
        raise _fail(path, f"count mismatch: {n} images but {y.shape[0]} labels in array {key!r}")
    if np.issubdtype(y.dtype, np.unsignedinteger) and y.dtype.itemsize == 8 and y.size and y.max() >= 2**63:
        raise _fail(path, f"array {key!r} has labels too large for int64")
    y = y.astype(np.int64)
    _check_labels(y, num_classes, path)
    return y
