"""Files that belong together, replaced together, and a lock on the directory that holds them.

:func:`write_file_set` writes several files into a directory so that a reader, or a process killed at any
moment (SIGKILL included), finds either the complete previous set or the complete new one, never a mix.
The files are written into a fresh hidden folder ``DIR/.set-<time>-<random>/``; ``DIR/.set`` is a symlink
to the current one and is swapped with one ``rename``, the only atomic step a POSIX file system offers for
several files at once; each ``DIR/<name>`` is a symlink to ``.set/<name>`` (the layout Kubernetes uses for
its mounted ConfigMaps). Readers open ``DIR/<name>`` as usual; ``cp -r`` and ``shutil.copytree`` copy the
content. A run killed half-way leaves a temporary folder behind; the next write removes it. A set written
with a name of its own (``keep_as``) stays beside the later ones: the ConGrad callback keeps every epoch's.

:func:`prepare_output_dir` turns a user's ``output_dir`` into a directory that exists and is writable, or
one line saying why it cannot be one. :func:`locked_directory` holds an exclusive ``flock`` on ``DIR/.lock``
for as long as a process writes there; a second process gets a :class:`~congrad.errors.CongradError` naming
the holder. The kernel drops the lock when its process ends, however it ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from congrad.errors import CongradError
from congrad.utils.io import OutputError, write_failure

CURRENT = ".set"
LOCK = ".lock"


def write_file_set(
    directory: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]], keep_as: str | None = None
) -> Path:
    """Replace the set of files ``writers`` names in ``directory`` as one: ``writers[name](path)`` writes
    file ``name`` at ``path`` (a temporary location). An exception in a writer leaves the previous set; a
    failure for want of space or permission is an :class:`~congrad.utils.io.OutputError` naming the file.
    Returns the folder that holds the new set.

    ``keep_as``: the new set's folder is ``directory/<keep_as>`` (which must not exist yet), and it stays
    when a later set replaces it as the current one: a history of sets, each written once."""
    directory = Path(directory)
    target = directory  # what a failure to write names
    tmp = directory / f"{CURRENT}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.tmp"
    final = directory / keep_as if keep_as else tmp.with_suffix("")
    if final.exists():
        raise CongradError(f"{final} exists already: a kept set is never written twice")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale(directory, writers)
        _link_names(directory, writers)
        tmp.mkdir()
        for name, write in writers.items():
            target = directory / name
            write(tmp / name)
        target = directory
        tmp.rename(final)  # complete, not yet current
        _point(directory / CURRENT, final.name)  # the commit: one rename
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = write_failure(err, directory)
        if reason is not None:
            raise OutputError(target, reason) from None
        raise
    _remove_stale(directory, writers)
    return final


def current_set(directory: str | os.PathLike) -> Path | None:
    """The folder that holds the current set of ``directory``, or None before the first one."""
    link = Path(directory) / CURRENT
    return link.parent / os.readlink(link) if link.is_symlink() else None


def prepare_output_dir(path: str | os.PathLike, what: str | None = None) -> Path:
    """``path`` as a directory that exists (created if missing) and takes a byte of data, or a CongradError
    that says what is wrong with it; ``what`` names it in the message (default ``output_dir=<path>``)."""
    out_dir = Path(path)
    what = what or f"output_dir={out_dir}"
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                problem = "is a file" if parent == out_dir else f"is inside {parent}, which is a file"
                raise CongradError(f"{what} {problem}: give a directory (it is created if missing)")
            break
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CongradError(f"{what} cannot be created ({err.strerror or err})") from None
    try:  # a read-only mount, a directory of another user, a full disk
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise CongradError(f"{what} is not writable ({err.strerror or err})") from None
    return out_dir


@contextmanager
def locked_directory(directory: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold ``directory/.lock`` exclusively while the block runs (the directory is created if missing);
    ``what`` names the directory in the error a second process gets (e.g. ``output_dir=out/``)."""
    import fcntl

    directory = Path(directory)
    lock = directory / LOCK
    try:
        f = open(lock, "a+", encoding="utf-8")
    except OSError as err:
        raise CongradError(f"{what} is not writable ({err.strerror or err})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CongradError(
                f"{what} is in use by {holder}: two runs writing one directory would mix their files; wait "
                "for it to finish or choose another directory"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield directory
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _link_names(directory: Path, names: Mapping[str, object]) -> None:
    """Make each ``directory/<name>`` a symlink to ``.set/<name>`` without changing what a reader sees:
    files of an earlier layout (plain files) first become the current set, by hard links."""
    current = directory / CURRENT
    if not current.is_symlink():
        legacy = directory / f"{CURRENT}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        legacy.mkdir()
        for name in names:
            path = directory / name
            if path.is_file() and not path.is_symlink():
                os.link(path, legacy / name)
        _point(current, legacy.name)
    for name in names:
        path = directory / name
        target = f"{CURRENT}/{name}"
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if path.is_dir() and not path.is_symlink():
            raise CongradError(f"{path} is a directory; it is where the file {name} goes: move it away")
        _point(path, target)


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` in one rename (whatever was at ``link`` is replaced)."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _remove_stale(directory: Path, names: Mapping[str, object]) -> None:
    """Sets that are not current, and the temporaries of runs that were killed: ``.set-*.tmp`` folders and
    ``.<name>.*.tmp`` links (and files: earlier versions wrote each file on its own that way)."""
    current = current_set(directory)
    prefixes = tuple(f".{name}." for name in (*names, CURRENT))
    for entry in directory.iterdir():
        name = entry.name
        stale = name.startswith(f"{CURRENT}-") and (current is None or name != current.name)
        stale |= name.startswith(prefixes) and name.endswith(".tmp")
        if not stale:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
