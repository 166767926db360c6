"""Atomic file writes shared by every writer in the package (audio, token files, checkpoints).

A file is written under a hidden temporary name next to its target, then renamed into place,
so a crash or Ctrl-C leaves either the old file or the complete new one, never half of one.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path_beside(path: str | os.PathLike) -> str:
    """An empty new file next to ``path``, hidden, with the same suffix and the usual (umask) mode."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"cannot create a temporary file next to {path}")


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    With ``overwrite=False`` the finished file is linked into place only if ``path`` still does
    not exist (FileExistsError otherwise), so a file that appeared during a long write survives.
    """
    tmp = temp_path_beside(path)
    mode = os.stat(tmp).st_mode & 0o777       # the umask mode; a writer that recreates tmp may narrow it
    try:
        yield tmp
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _publish_new(tmp: str, path: str | os.PathLike) -> None:
    """Move tmp to path, failing with FileExistsError if path exists (atomically where links work)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} appeared while it was being written; pass --force to overwrite it") from None
    except OSError:                           # no hard links on this file system: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(f"{path} exists; pass --force to overwrite it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) for a temporary path beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path, overwrite) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
