"""Folders of IDX files: :func:`find_idx_pair` (the one images and one labels file of a folder, or of one
split of it, by file name) and :func:`load_folder_pair`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataFileNotFoundError, _fail
from .idx import load_idx

_NON_IDX_SUFFIXES = (".csv", ".csv.gz", ".npz", ".npy", ".md", ".txt", ".json", ".zip", ".png",
                     ".jpg", ".py", ".ipynb", ".html", ".pdf", ".tar", ".tar.gz", ".tgz")  # fmt: skip


def _is_idx_candidate(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and not name.startswith(".") and not name.endswith(_NON_IDX_SUFFIXES)


def _is_images_name(name: str) -> bool:
    return "images" in name or "idx3" in name


def _is_labels_name(name: str) -> bool:
    return "labels" in name or "idx1" in name


def _pick_one(folder, candidates: list[Path], what: str, pattern: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise _fail(folder, f"no {what} file found (looked for file names matching {pattern})",
                    "name the files like train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz")  # fmt: skip
    names = ", ".join(sorted(c.name for c in candidates))
    raise _fail(folder, f"{len(candidates)} files could be the {what} file ({names})",
                "keep exactly one (move the others elsewhere) or pass the files explicitly")  # fmt: skip


def _list_folder(folder) -> list[Path]:
    p = Path(folder)
    if not p.exists():
        raise _fail(folder, "folder not found", "check the path", cls=DataFileNotFoundError)
    if not p.is_dir():
        raise _fail(folder, "is not a folder")
    try:
        return sorted(c for c in p.iterdir() if _is_idx_candidate(c))
    except OSError as e:
        raise _fail(folder, f"cannot list folder ({e.strerror or e})") from e


def find_idx_pair(folder, split: str | None = None) -> tuple[Path, Path]:
    """Paths ``(images, labels)`` of the one IDX images file and one IDX labels file in ``folder``.

    Images files are those whose name contains ``images`` or ``idx3``, labels files ``labels`` or
    ``idx1`` (any prefix, any case, gzip or plain; CSV/NPZ/text files are ignored). With ``split``
    (``"train"`` or ``"test"``) only names containing ``train`` (respectively ``t10k`` or ``test``)
    count. Raises :class:`DataError` when zero or several files match.
    """
    files = _list_folder(folder)
    tokens = {None: ("",), "train": ("train",), "test": ("t10k", "test")}[split]
    files = [f for f in files if any(t in f.name.lower() for t in tokens)]
    where = f"*{'|'.join(tokens)}*" if split else "*"
    images = _pick_one(folder, [f for f in files if _is_images_name(f.name.lower())],
                       f"{split + ' ' if split else ''}images", f"{where}images* or {where}idx3*")  # fmt: skip
    labels = _pick_one(folder, [f for f in files if _is_labels_name(f.name.lower())],
                       f"{split + ' ' if split else ''}labels", f"{where}labels* or {where}idx1*")  # fmt: skip
    return images, labels


def load_folder_pair(folder, num_classes: int | None = 10):
    """Load the one IDX images file and one IDX labels file found in ``folder`` (see :func:`find_idx_pair`).

    Returns ``(images, labels)`` like :func:`load_idx`.
    """
    images_path, labels_path = find_idx_pair(folder)
    return load_idx(images_path, labels_path, num_classes=num_classes)
