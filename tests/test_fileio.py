"""Atomic writes: all or nothing, umask permissions, and no overwrite unless asked."""
import os

import pytest

from codec.fileio import atomic_path, atomic_write_bytes


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_and_keeps_the_umask_mode(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_without_overwrite_a_file_that_appears_during_the_write_survives(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        with atomic_path(target, overwrite=False) as tmp:
            open(tmp, "wb").write(b"ours")
            target.write_bytes(b"the user's")          # created by someone else meanwhile
    assert target.read_bytes() == b"the user's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    atomic_write_bytes(tmp_path / "new.bin", b"fresh", overwrite=False)
    assert (tmp_path / "new.bin").read_bytes() == b"fresh"
