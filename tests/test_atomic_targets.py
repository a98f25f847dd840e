"""Every write goes through portacnn._atomic, and every way it can fail names the file the caller asked for (or its
missing folder), in one line, never the hidden temporary file the bytes go to first; nothing is left behind.

A property over target kinds (missing folder, missing parents, a folder, a file where a folder should be, a
link to a folder) x writers (atomic_write, Sequential.save, the history and plots writers of the CLI use the
same function), and over the steps of a write that can fail (creating the temporary file, writing it, fsync,
the rename)."""

from __future__ import annotations

import errno
import os

import pytest

import portacnn as pc
from portacnn import _atomic
from portacnn._atomic import atomic_write


def _targets(tmp_path):
    """name -> (target path, the OSError subclass, fragments of the one-line message)."""
    (tmp_path / "afile").write_text("I am a file")
    (tmp_path / "afolder").mkdir()
    os.symlink(tmp_path / "afolder", tmp_path / "link")
    return {
        "missing-folder": (tmp_path / "nope" / "best.safetensors", FileNotFoundError,
                           ["folder", "nope", "does not exist"]),
        "missing-parents": (tmp_path / "a" / "b" / "c.safetensors", FileNotFoundError,
                            ["does not exist", "is missing"]),
        "a-folder": (tmp_path / "afolder", IsADirectoryError, ["is a folder"]),
        "link-to-folder": (tmp_path / "link", IsADirectoryError, ["is a folder"]),
        "file-as-folder": (tmp_path / "afile" / "m.safetensors", NotADirectoryError, ["afile", "is not a folder"]),
        "dot": (".", IsADirectoryError, ["is a folder"]),
    }


KINDS = ["missing-folder", "missing-parents", "a-folder", "link-to-folder", "file-as-folder", "dot"]
WRITERS = {
    "check_target": lambda path: _atomic.check_target(path),
    "atomic_write": lambda path: atomic_write(path, b"data"),
    "Sequential.save": lambda path: pc.models.seed_cnn().save(path),
    "save-with-optimizer": lambda path: (m := pc.models.seed_cnn()).save(path, optimizer=pc.optim.Adam(m.parameters())),
}


def _no_temporary_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_target_that_cannot_be_written_is_named_in_one_line(tmp_path, monkeypatch, kind, writer):
    monkeypatch.chdir(tmp_path)
    path, oserror, fragments = _targets(tmp_path)[kind]
    with pytest.raises(OSError) as info:
        WRITERS[writer](path)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, oserror), type(e).__mro__
    text = str(e)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert e.filename == str(path) and ".tmp" not in text, text
    assert all(f in text for f in fragments), (text, fragments)
    assert not _no_temporary_files(tmp_path)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "a").exists()  # nothing created on the way


class _Broken:
    """Makes one step of a write fail as a full disk would (or a refused permission)."""

    def __init__(self, monkeypatch, step, code):
        self.code = code
        if step == "mkstemp":
            monkeypatch.setattr(_atomic.tempfile, "mkstemp", self.fail)
        elif step == "replace":
            monkeypatch.setattr(_atomic.os, "replace", self.fail)
        elif step == "fsync":
            monkeypatch.setattr(_atomic.os, "fsync", self.fail)
        elif step == "chmod-then-replace":  # chmod failing is ignored; then the rename fails
            monkeypatch.setattr(_atomic.os, "chmod", self.fail)
            monkeypatch.setattr(_atomic.os, "replace", self.fail)

    def fail(self, *args, **kwargs):
        raise OSError(self.code, os.strerror(self.code), "/somewhere/.best.safetensors.123.abcdef.tmp")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EDQUOT, errno.EROFS])
@pytest.mark.parametrize("step", ["mkstemp", "fsync", "replace", "chmod-then-replace"])
def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path, monkeypatch, step, code):
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"the previous file")
    _Broken(monkeypatch, step, code)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"new")
    e = info.value
    assert e.errno == code and e.filename == str(target), (e.errno, e.filename)
    assert ".tmp" not in str(e) and "\n" not in str(e) and os.strerror(code) in str(e), str(e)
    assert target.read_bytes() == b"the previous file"  # the old file whole
    assert not _no_temporary_files(tmp_path)


@pytest.mark.parametrize("name", ["new.bin", "sub/new.bin", "existing.bin", "with space.bin", "ünïcode.bin"])
def test_writable_targets_pass_and_are_written(tmp_path, monkeypatch, name):
    """The check passes what it should: a new file in an existing folder, an existing file, a relative name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "existing.bin").write_bytes(b"old")
    assert _atomic.check_target(name) == type(_atomic.check_target(name))(name)
    atomic_write(name, b"new")
    assert (tmp_path / name).read_bytes() == b"new"


@pytest.mark.parametrize("bad", [None, 3, 1.5, ["a"], object()])
def test_a_path_that_is_not_a_path_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be a str or os.PathLike"):
        _atomic.check_target(bad)
