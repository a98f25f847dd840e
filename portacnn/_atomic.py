"""Atomic file writes: readers see either the previous complete file or the new complete one, never a part.

Used for checkpoints, ``history.json``, plots and ONNX exports. Every error names the file the caller asked for
(or its missing folder), never the hidden temporary file the bytes go to first: :func:`check_target` says up
front whether a path can be written (a missing folder, a folder where the file should be, a file where the
folder should be), and a failure while writing is re-raised as the same kind of :class:`OSError` naming the
target.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from pathlib import Path


class TargetError(OSError, ValueError):
    """A path that cannot be written, found before writing: a ValueError (a bad argument) and an OSError with the
    errno, a one-line ``strerror`` and the path as ``filename``; prints as ``"<path>: <what is wrong>"``."""

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


class MissingFolderError(TargetError, FileNotFoundError):
    """The folder a file is to be written into does not exist."""


class FolderTargetError(TargetError, IsADirectoryError):
    """The path to write is a folder."""


class NotAFolderError(TargetError, NotADirectoryError):
    """The folder of the path to write is a file (or something else that is not a folder)."""


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_target(path) -> Path:
    """``path`` as a Path if a file can be written there: it is not a folder and its folder exists (and is one);
    else a :class:`TargetError` (also an IsADirectoryError, FileNotFoundError or NotADirectoryError) naming
    ``path`` and saying what to do. Cheap (two stats): callers check before long work (a training run) what
    :func:`atomic_write` would refuse after it."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise TypeError(f"a file path must be a str or os.PathLike; got {type(path).__name__}") from None
    if path.is_dir():
        raise FolderTargetError(errno.EISDIR, "is a folder; give a file name inside it", str(path))
    folder = _folder(path)
    if not folder.exists():
        missing = folder
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        which = f"its folder {folder} does not exist" + (f" ({missing} is missing)" if missing != folder else "")
        raise MissingFolderError(errno.ENOENT, f"{which}; create it first or choose another path", str(path))
    if not folder.is_dir():
        raise NotAFolderError(errno.ENOTDIR, f"{folder} is not a folder; choose another path", str(path))
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` (raised while writing through a temporary file) as the same kind of OSError naming ``path``."""
    if error.errno is None:
        return OSError(f"{path}: {error}")
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(path) -> list[Path]:
    """Delete ``.<name>.<pid>.*.tmp`` files left beside ``path`` by writers that were killed (their pid is gone).

    A SIGKILL between creating the temporary file and renaming it leaves such a file behind; it never
    replaces the real checkpoint, and :func:`load` only ever opens the path it is given. Files of a
    still-running writer are kept. Returns the files removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    removed = []
    try:
        candidates = list(folder.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(path.name) + 2 : -len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The bytes go to ``.<name>.<pid>.<random>.tmp`` in the same folder, are flushed and fsync'ed, and the
    temporary file is renamed over ``path`` (atomic on POSIX and Windows). The file gets the usual
    permissions (0o666 minus the umask) rather than mkstemp's private 0o600. Temporary files of killed
    earlier writers are removed afterwards. A path :func:`check_target` refuses raises its error before
    anything is written; an OSError while writing is raised again naming ``path`` (the temporary file removed).
    """
    path = check_target(path)  # first: os.replace would fail only after the temporary file was written
    folder = _folder(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as e:  # e.g. a folder we may not write to: name the target, not the temporary name
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # a full disk, a quota, a file where the target is: named as the target
            raise _naming(e, path) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    remove_stale_temp_files(path)
