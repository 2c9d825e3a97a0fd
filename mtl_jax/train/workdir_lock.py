"""One writer per workdir: an exclusive lock held for as long as a run writes into it.

``<workdir>/.lock`` is locked with ``flock`` (the kernel releases it when the process dies,
even under ``kill -9``, and NFS maps it to a POSIX lock seen by every host) and holds the
owner's process id, host and start time, which the refusal of a second writer quotes. A lock
file left by a dead process is stale: it no longer blocks anyone, and taking it over is
reported as a warning naming the process that left it.

The lock is re-entrant within a process (``train_and_evaluate`` holds it around ``fit``,
which takes it too). A workdir the lock had to create is removed again on release when
nothing was written into it, so a run refused before training leaves no empty folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Iterator

from mtl_jax.distributed import writes_files

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}  # absolute workdir -> nesting depth, for this process's locks


class WorkdirInUse(FileExistsError):
    """Another process is writing to this workdir."""


def _owner_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode(errors="replace").strip()
    if not raw:
        return ""
    try:
        owner = json.loads(raw)
        return f"process {owner['pid']} on host {owner['host']} (since {owner['since']})"
    except (ValueError, KeyError, TypeError):
        return f"an unknown process ({raw[:80]!r})"


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    return missing


def _open_locked(lock: Path, workdir: Path) -> int:
    """Opens and flocks ``lock``; retries when the file was replaced between open and lock."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner_text(fd) or "another process"
            os.close(fd)
            raise WorkdirInUse(f"workdir {str(workdir)!r} is in use by {owner}: one run writes to a workdir at a "
                               "time. Wait for it to finish, or choose another workdir") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Holds ``workdir``'s lock; yields the workdir's absolute path.

    Raises:
      WorkdirInUse: another live process holds it (its pid, host and start time are named).
      PermissionError: the workdir cannot be created or written.
    """
    path = Path(workdir).absolute()
    if not writes_files():  # process 0 of a multi-process run holds the lock for all of them
        yield path
        return
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    created = _missing_ancestors(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path / LOCK_FILE, path)
    except WorkdirInUse:
        raise
    except OSError as error:
        _remove_if_empty(created)
        raise PermissionError(f"workdir {str(path)!r} is not writable ({error.strerror or error}); "
                              "choose another workdir") from None
    stale = _owner_text(fd)
    if stale:
        warnings.warn(f"workdir {str(path)!r}: taking over a stale lock left by {stale}, which has ended",
                      RuntimeWarning, stacklevel=3)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    os.fsync(fd)
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        (path / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)
        _remove_if_empty(created)


def in_use(workdir: str | Path) -> bool:
    """Whether another process seems to hold ``workdir``'s lock now: its lock file names a live
    process (on this host; a process on another host counts as live). Reads only: probing with
    ``flock`` itself could make a concurrent writer's attempt fail."""
    path = Path(workdir).absolute()
    if path in _held:
        return False
    try:
        owner = json.loads((path / LOCK_FILE).read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no lock file, or one being written or left unreadable
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return pid != os.getpid()


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return
