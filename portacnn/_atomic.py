"""Atomic file writes: readers see either the previous complete file or the new complete one, never a part.

Used for checkpoints, ``history.json`` and plots.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


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
    earlier writers are removed afterwards.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():  # checked first: os.replace would fail only after the temporary file was written
        raise IsADirectoryError(21, "is a folder; give a file name inside it", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
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
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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
