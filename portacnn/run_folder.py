"""Output folders of training runs: claimed with a lock, never shared by two runs, never written through links.

A run claims its folder by creating and locking ``.portacnn.lock`` in it (``O_NOFOLLOW``: a symbolic link
planted at that name is refused, never followed; so is a hard link, FIFO or device found there; ``flock``: the lock vanishes with the process, even after a
SIGKILL, and the file is removed when the run ends). A second run into the same folder fails at once, naming the first one's pid. A folder that already
holds a run (its ``model.safetensors`` or ``history.json``) is refused unless the caller allows overwriting
or is resuming that very run. The folders a claim creates are removed on exit while empty: a run refused or
failed before it wrote anything leaves no empty folder behind. Everything else in the folder is written by
:func:`portacnn._atomic.atomic_write` (``mkstemp`` + ``os.replace`` in the folder), so no existing file is ever
opened for writing.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

LOCK_NAME = ".portacnn.lock"
RUN_FILES = ("model.safetensors", "history.json")


class RunFolderError(OSError):
    """The output folder cannot be used; the message says why and what to do."""


def existing_run_files(folder: Path) -> list[str]:
    """The files of an earlier run in ``folder`` (empty when it holds none)."""
    return [name for name in RUN_FILES if (folder / name).exists() or (folder / name).is_symlink()]


class RunFolder:
    """A claimed output folder; use as a context manager (the lock is released on exit).

    The folders it creates (``path`` and any missing parents; ``made=True``: ``path`` was made for it, e.g. a
    fresh ``runs/<timestamp>``) are removed again on exit when they are still empty: a run that was refused or
    failed before writing anything leaves no empty folder behind. A folder that holds anything is kept."""

    def __init__(self, path, overwrite: bool = False, resuming: Path | None = None, made: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self.resuming = resuming
        self._fd = None
        self._made = [self.path] if made else []  # deepest first

    def __enter__(self) -> "RunFolder":
        try:
            self._mkdirs()
            if not self.path.is_dir():
                raise RunFolderError(f"output folder {self.path} is not a folder; choose another with --out")
            self._lock()
            earlier = existing_run_files(self.path)
            resumed_here = self.resuming is not None and _samefile(self.resuming.parent, self.path)
            if earlier and not (self.overwrite or resumed_here):
                raise RunFolderError(f"output folder {self.path} already holds a run ({', '.join(earlier)}); "
                                     "use --overwrite to replace it, or choose another with --out")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mkdirs(self) -> None:
        """Create ``path`` and its missing parents one by one, remembering each one made here."""
        missing = []
        folder = self.path
        while not folder.exists() and not folder.is_symlink() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by someone else: theirs, not ours
                continue
            except OSError as e:
                raise RunFolderError(f"output folder {self.path} is not writable ({e.strerror or e}); "
                                     "choose another with --out") from None
            self._made.insert(0, folder)

    def remove_if_empty(self) -> None:
        """Remove the folders this claim created, deepest first, while they are empty (``rmdir`` never removes a
        folder that holds anything, so a run's files, or another run's lock, keep them)."""
        while self._made:
            try:
                os.rmdir(self._made[0])
            except OSError:
                break
            self._made.pop(0)

    def _lock(self) -> None:
        for _ in range(10):  # retried only when another run removed the lock file between our open and lock
            fd = self._open_lock()
            if self._acquire(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return
        raise RunFolderError(f"could not lock {self.path / LOCK_NAME}: other runs keep replacing it")

    def _open_lock(self) -> int:
        lock = self.path / LOCK_NAME
        flags = (os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))  # O_NONBLOCK: a FIFO planted at the name cannot hang us
        try:
            fd = os.open(lock, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunFolderError(f"{lock} is a symbolic link; refusing to write through it "
                                     "(remove it, or choose another --out)") from None
            raise RunFolderError(f"output folder {self.path} is not writable ({e.strerror or e}); "
                                 "choose another with --out") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # a FIFO, a device, or a hard link to a file
            os.close(fd)                                          # elsewhere: never truncated or written
            raise RunFolderError(f"{lock} is not a plain file of its own (a hard link, FIFO or device?); refusing to "
                                 "write to it (remove it, or choose another --out)")
        return fd

    def _acquire(self, fd: int) -> bool:
        """Lock ``fd``; False when the file was unlinked meanwhile (then try again with a new one)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the lock file is advisory only
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(f"another run (pid {holder}) is writing into {self.path}; wait for it to "
                                 "finish or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path / LOCK_NAME, follow_symlinks=False))
        except OSError:
            same = False
        if not same:
            os.close(fd)
        return same

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so a waiting run re-checks and retries)."""
        if self._fd is not None:
            try:
                os.unlink(self.path / LOCK_NAME)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc) -> None:
        self.release()
        self.remove_if_empty()


def _samefile(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
