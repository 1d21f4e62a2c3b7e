"""Atomic output: a reader never sees a half-written file or directory, and a write that fails for want of
space or permission is one line naming the path (:class:`OutputError`), with the previous content intact."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from congrad.errors import CongradError

# what the file system answers when the data cannot go where it was sent (not a bug of ours)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors, tokenizers) report one


class OutputError(CongradError):
    """An output that could not be written (disk full, quota, a read-only or unwritable directory); names
    the path and says that what was there before is unchanged."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"cannot write {self.path}: {reason}; what was there before is unchanged")


def write_failure(err: BaseException, where: str | os.PathLike) -> str | None:
    """The file-system reason behind ``err``, raised while writing into directory ``where``: one of
    :data:`WRITE_ERRNOS` (``"No space left on device"``, ...), also where a library wrapped the ``OSError``
    (torch raises a RuntimeError from it) or reports it as text (safetensors), or the reason of a nested
    :class:`OutputError`; None for anything else: another :class:`CongradError` (it says what to fix itself),
    or a permission error on a file outside ``where`` (something read, not written)."""
    if isinstance(err, CongradError) and not isinstance(err, OutputError):
        return None
    where = os.path.abspath(where)
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OutputError):
            return err.reason
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            read = (
                err.errno in (errno.EACCES, errno.EPERM)
                and err.filename is not None
                and not _on_the_way(os.path.abspath(os.fsdecode(err.filename)), where)
            )
            return None if read else err.strerror or os.strerror(err.errno)
        found = _OS_ERROR.search(str(err))
        if found and int(found.group(1)) in WRITE_ERRNOS:
            return os.strerror(int(found.group(1)))
        err = err.__cause__ or err.__context__
    return None


def _on_the_way(name: str, where: str) -> bool:
    """Whether ``name`` is ``where``, inside it, or one of the directories above it (created on the way)."""
    common = os.path.commonpath([name, where])
    return common in (name, where)


@contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; rename it onto ``path`` on success.

    On an exception the temporary is removed and ``path`` keeps its previous content (or stays absent); a
    failure for want of space or permission (:func:`write_failure`), also one of a nested write into the
    temporary, becomes an :class:`OutputError` naming ``path``. A directory that already exists at ``path``
    is replaced. What appears at ``path`` has the permissions of any new file (0666, or 0777 for
    directories, less the umask) whatever wrote it: ``mkstemp`` creates private entries, and so do libraries
    that write through a temporary file of their own (safetensors).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:  # whatever the reason, nothing can be written there
        raise OutputError(path, err.strerror or str(err)) from None
    try:
        yield tmp
        _usual_permissions(tmp)
        if is_dir and path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        reason = write_failure(err, path.parent)
        if reason is not None:
            raise OutputError(path, reason) from None
        raise


def _usual_permissions(root: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    if not root.is_dir():
        root.chmod(0o666 & ~umask)
        return
    root.chmod(0o777 & ~umask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")
