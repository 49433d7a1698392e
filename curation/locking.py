"""One `thresher run` per output folder: an exclusive lock held for the whole run.

The lock is `fcntl.flock` on `<output>/.thresher.lock`, which records the owner's pid and host for
the message a second run prints. The kernel releases a flock when its holder dies, so the lock of a
killed run never blocks the rerun (a stale file is simply locked again). `thresher worker` takes no
lock: the step pods of a CurationJob share one output on purpose, each rank writing its own files.
Object stores (`s3://`) have no such lock; there, one output per run is up to the user.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator

from curation.dataset import Location
from curation.errors import OutputInUseError

LOCK_NAME = ".thresher.lock"
_held: list[int] = []  # descriptors of the locks this process holds (forked pool workers close them)


@contextlib.contextmanager
def output_lock(output_path: str) -> Iterator[None]:
    """Hold the output's lock while the block runs; another holder is an :class:`OutputInUseError`."""
    loc = Location.of(output_path)
    if loc.fs.type_name != "local":
        yield
        return
    loc.mkdir()
    path = os.path.join(loc.path, LOCK_NAME)
    fd = _acquire(path, output_path)
    _held.append(fd)
    try:
        yield
    finally:
        _held.remove(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still locked: a run waiting to start sees the name gone and retries
        os.close(fd)


def _acquire(path: str, output_path: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise OutputInUseError(
                f"another run ({owner}) is using this output ({output_path}); "
                "wait for it to finish or choose another output"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # not a file a finishing run unlinked after we opened it
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    return fd


def _owner(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {int(record['pid'])} on {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"  # the owner has locked the file but not written its name yet


def release_inherited() -> None:
    """In a forked child: close the parent's lock descriptors (the parent keeps its lock)."""
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
