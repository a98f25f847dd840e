"""CIFAR-10 and CIFAR-100 in their "binary version" (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``):
:func:`load_cifar`.

A file is a sequence of records with no header. A CIFAR-10 record is 1 label byte (0..9) and 3072 pixel
bytes; a CIFAR-100 record is 2 label bytes (coarse 0..19, fine 0..99) and 3072 pixel bytes. The pixels are
the red plane, then the green plane, then the blue plane, each 32 x 32 row-major: exactly a channels-first
``(3, 32, 32)`` image. CIFAR-10 ships as ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train),
``test_batch.bin`` (test) and ``batches.meta.txt`` (the 10 class names, one a line); CIFAR-100 as
``train.bin``, ``test.bin``, ``fine_label_names.txt`` (100 names) and ``coarse_label_names.txt`` (20).
portacnn uses the fine labels of CIFAR-100 and the names that go with them.

Which of the two a file is: ``variant=`` when given, else its name when it is one of those above, else its
size: a file of N records is a multiple of 3073 or of 3074 bytes. A size that is a multiple of both (from
9,446,402 bytes on) is decided by the label bytes: the reading whose label bytes are all in range wins;
when both or neither are, a :class:`~portacnn.data.errors.DataError` asks for ``variant=``. An empty file,
a size that is a whole number of neither record, a label out of range and a bad class-names file are
one-line DataErrors naming the file; the images and labels of one split are checked against
``PORTACNN_MAX_DATA_BYTES`` from the file sizes before anything is allocated, then read in chunks into one
preallocated array.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import limits
from ._checks import _check_limit
from ._io import _READ_CHUNK_BYTES, _check_file
from .errors import DataFileNotFoundError, _fail

VARIANTS = ("cifar10", "cifar100")
_NAME = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_LABEL_BYTES = {"cifar10": 1, "cifar100": 2}
_PIXELS = 3 * 32 * 32
_ROW = {v: _LABEL_BYTES[v] + _PIXELS for v in VARIANTS}  # 3073, 3074
_CLASSES = {"cifar10": 10, "cifar100": 100}
_NAMES_FILE = {"cifar10": "batches.meta.txt", "cifar100": "fine_label_names.txt"}
_TRAIN_BATCH = re.compile(r"data_batch_([0-9]+)\.bin", re.IGNORECASE)
_FILES = {"cifar10": ("data_batch_N.bin", "test_batch.bin"), "cifar100": ("train.bin", "test.bin")}
_MAX_NAMES_BYTES = 1 << 16  # a class-names file: 100 short names take about 1 KB
_MAX_NAME_CHARS = 100


def _check_variant(variant) -> None:
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be 'cifar10', 'cifar100' or None, got {variant!r}")


def _variant_by_name(name: str) -> str | None:
    name = name.lower()
    if _TRAIN_BATCH.fullmatch(name) or name == "test_batch.bin":
        return "cifar10"
    return "cifar100" if name in ("train.bin", "test.bin") else None


def cifar_files(folder) -> tuple[str, dict[str, list[Path]]] | None:
    """``(variant, {"train": [...], "test": [...]})`` of the CIFAR binary files in ``folder`` by their names
    (``data_batch_<k>.bin`` in the order of ``k`` and ``test_batch.bin``; ``train.bin`` and ``test.bin``),
    None when it holds none. A folder holding files of both variants is a DataError."""
    try:
        names = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise _fail(folder, f"cannot list folder ({e.strerror or e})") from e
    found = {v: [n for n in names if _variant_by_name(n) == v] for v in VARIANTS}
    if found["cifar10"] and found["cifar100"]:
        raise _fail(folder, f"holds CIFAR-10 files ({', '.join(found['cifar10'])}) and CIFAR-100 files "
                    f"({', '.join(found['cifar100'])})", "keep the files of one data set in a folder")  # fmt: skip
    variant = "cifar10" if found["cifar10"] else "cifar100" if found["cifar100"] else None
    if variant is None:
        return None
    folder = Path(folder)
    files = found[variant]
    train = sorted((n for n in files if n.lower().startswith(("data_batch_", "train"))),
                   key=lambda n: int(_TRAIN_BATCH.fullmatch(n.lower()).group(1)) if variant == "cifar10" else 0)
    test = [n for n in files if n.lower().startswith("test")]
    return variant, {"train": [folder / n for n in train], "test": [folder / n for n in test]}


def _records(path, size: int, variant: str | None) -> tuple[str, int]:
    """``(variant, number of records)`` of a file of ``size`` bytes (see the module docstring)."""
    if size == 0:
        raise _fail(path, "file is empty (0 bytes)", "re-extract the CIFAR binary archive")
    variant = variant or _variant_by_name(Path(path).name)
    if variant is not None:
        if size % _ROW[variant]:
            raise _fail(path, f"{size} bytes is not a whole number of {_ROW[variant]}-byte {_NAME[variant]} records "
                        f"({_LABEL_BYTES[variant]} label byte{'s' if variant == 'cifar100' else ''} + 3072 pixel "
                        f"bytes): the file is truncated or not a {_NAME[variant]} binary file",
                        "re-extract the CIFAR binary archive")  # fmt: skip
        return variant, size // _ROW[variant]
    fits = [v for v in VARIANTS if size % _ROW[v] == 0]
    if not fits:
        raise _fail(path, f"{size} bytes is a whole number of neither 3073-byte CIFAR-10 records nor 3074-byte "
                    f"CIFAR-100 records: the file is truncated or not a CIFAR binary file",
                    "re-extract the CIFAR binary archive")  # fmt: skip
    if len(fits) == 2:
        fits = [v for v in VARIANTS if _bad_label(path, v, size // _ROW[v]) is None]
        if len(fits) != 1:
            what = "both readings" if fits else "neither reading"
            raise _fail(path, f"{size} bytes could be {size // 3073} CIFAR-10 or {size // 3074} CIFAR-100 records, "
                        f"and the label bytes fit {what}", "say which it is: variant='cifar10' or "
                        "variant='cifar100'")  # fmt: skip
    return fits[0], size // _ROW[fits[0]]


def _chunks(path, variant: str, n: int):
    """``(first record, uint8 (k, record bytes))`` over the ``n`` records of ``path``, about a MiB at a time."""
    row = _ROW[variant]
    per = max(1, _READ_CHUNK_BYTES // row)
    buf = np.empty(min(per, n) * row, dtype=np.uint8)
    try:
        with open(path, "rb") as f:
            for start in range(0, n, per):
                k = min(per, n - start)
                with memoryview(buf) as view:
                    got = f.readinto(view[: k * row])
                if got != k * row:
                    raise _fail(path, f"the file changed while it was being read: it now ends before record "
                                f"{start + k - 1}", "do not modify data files while portacnn reads them")  # fmt: skip
                yield start, buf[: k * row].reshape(k, row)
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e


def _label_problem(rows: np.ndarray, variant: str) -> tuple[int, str] | None:
    """(index in ``rows``, problem) of the first record whose label bytes are out of range, else None."""
    checks = [(0, 10, "label")] if variant == "cifar10" else [(0, 20, "coarse label"), (1, 100, "fine label")]
    bad = [(int(np.flatnonzero(rows[:, col] >= top)[0]), col, top, what) for col, top, what in checks
           if (rows[:, col] >= top).any()]  # fmt: skip
    if not bad:
        return None
    i, col, top, what = min(bad)
    return i, f"{what} byte {int(rows[i, col])} is outside 0..{top - 1}"


def _bad_label(path, variant: str, n: int) -> tuple[int, str] | None:
    """(record, problem) of the first out-of-range label when ``path`` is read as ``variant``, else None."""
    for start, rows in _chunks(path, variant, n):
        problem = _label_problem(rows, variant)
        if problem is not None:
            return start + problem[0], problem[1]
    return None


def _read_into(path, variant: str, n: int, images: np.ndarray, labels: np.ndarray) -> None:
    """Read the ``n`` records of ``path`` into ``images`` ``(n, 3, 32, 32)`` and ``labels`` ``(n,)``."""
    flat = images.reshape(n, _PIXELS)
    fine = _LABEL_BYTES[variant] - 1
    for start, rows in _chunks(path, variant, n):
        problem = _label_problem(rows, variant)
        if problem is not None:
            raise _fail(path, f"record {start + problem[0]}: {problem[1]} ({_NAME[variant]})",
                        f"the file is corrupt, or not {_NAME[variant]}: pass variant= to say which it is")  # fmt: skip
        flat[start : start + len(rows)] = rows[:, _LABEL_BYTES[variant] :]
        labels[start : start + len(rows)] = rows[:, fine]


def _read_files(where, paths: list[Path], variant: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, variant) of CIFAR binary files read one after another into one preallocated array."""
    plan = []
    for p in paths:
        size = _check_file(p).stat().st_size
        v, n = _records(p, size, variant)
        if variant is not None and v != variant:
            raise _fail(p, f"is a {_NAME[v]} file among {_NAME[variant]} files")
        variant = v
        plan.append((p, n))
    total = sum(n for _, n in plan)
    _check_limit(where, limits.MAX_DATA_BYTES, total * (_PIXELS + 8),
                 f"{total} {_NAME[variant]} images of 3x32x32 and their int64 labels")  # fmt: skip
    images = np.empty((total, 3, 32, 32), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    for p, n in plan:
        _read_into(p, variant, n, images[start : start + n], labels[start : start + n])
        start += n
    return images, labels, variant


def _class_names(folder: Path, variant: str) -> list[str] | None:
    """The class names of ``folder``'s names file for ``variant``, or None when it has none; checked."""
    path = folder / _NAMES_FILE[variant]
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_NAMES_BYTES + 1)
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e
    if len(raw) > _MAX_NAMES_BYTES:
        raise _fail(path, f"class-names file longer than {_MAX_NAMES_BYTES} bytes; expected {_CLASSES[variant]} "
                    f"names, one a line", "restore the file from the CIFAR binary archive")  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(path, f"class-names file is not UTF-8 text ({e.reason} at byte {e.start})",
                    "restore the file from the CIFAR binary archive") from None  # fmt: skip
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue  # the CIFAR-10 file ends with blank lines
        if not name.isprintable() or len(name) > _MAX_NAME_CHARS:
            problem = "is not printable text" if not name.isprintable() else f"is over {_MAX_NAME_CHARS} characters"
            raise _fail(path, f"the class name on line {number} {problem}",
                        "restore the file from the CIFAR binary archive", line=number)  # fmt: skip
        if name in names:
            raise _fail(path, f"class name {name!r} appears twice", line=number)
        names.append(name)
    if len(names) != _CLASSES[variant]:
        raise _fail(path, f"holds {len(names)} class names; {_NAME[variant]} has {_CLASSES[variant]} (one a line)",
                    "restore the file from the CIFAR binary archive")  # fmt: skip
    return names


def load_cifar(path, split: str = "train", variant: str | None = None):
    """CIFAR-10 or CIFAR-100 binary data as ``(images uint8 (N, 3, 32, 32), labels int64 (N,), class_names)``.

    ``path`` is one ``.bin`` file (read whole, whatever ``split``) or the folder of the extracted archive,
    whose ``split`` (``"train"`` or ``"test"``) files are read: ``data_batch_1.bin`` .. ``data_batch_5.bin``
    in order, or ``test_batch.bin``; ``train.bin`` or ``test.bin`` for CIFAR-100. ``variant`` is
    ``"cifar10"``, ``"cifar100"`` or None (decided as the module docstring says). ``class_names`` comes from
    ``batches.meta.txt`` (CIFAR-10) or ``fine_label_names.txt`` (CIFAR-100) beside the data, None when it
    is absent; labels are the fine labels for CIFAR-100. Raises :class:`DataError`.
    """
    _check_variant(variant)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file or folder", cls=DataFileNotFoundError)
    if p.is_dir():
        found = cifar_files(p)
        if found is None:
            raise _fail(path, "holds no CIFAR binary files (data_batch_1.bin .. data_batch_5.bin and test_batch.bin, "
                        "or train.bin and test.bin)", "pass the folder extracted from the binary archive")  # fmt: skip
        if variant is not None and found[0] != variant:
            raise _fail(path, f"holds {_NAME[found[0]]} files, not {_NAME[variant]} ones")
        variant, files = found[0], found[1][split]
        if not files:
            wanted = _FILES[variant][0 if split == "train" else 1]
            raise _fail(path, f"holds no {_NAME[variant]} {split} file ({wanted})")
        folder = p
    else:
        files, folder = [p], p.parent
    images, labels, variant = _read_files(path, files, variant)
    return images, labels, _class_names(folder, variant)

