"""Open log files safely: regular files only, never a blocking open (a FIFO named like a log would hang the scan)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """A path that names a FIFO, device, socket or folder where a log file was expected."""


def irregular_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _refuse(mode: int) -> None:
    kind = irregular_kind(mode)
    if kind is not None:
        raise NotRegularFile(0, f"{kind}, not a regular file; skipped")


def open_regular(path: Path) -> BinaryIO:
    """The file opened for reading; NotRegularFile (an OSError) when it is not a regular file.

    stat() first, so that a device is never opened at all; O_NONBLOCK and fstat() after the open
    for a file swapped for a FIFO in between (opening a FIFO without O_NONBLOCK waits for a writer)."""
    _refuse(os.stat(path).st_mode)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _refuse(os.fstat(descriptor).st_mode)
    except OSError:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def read_bytes(path: Path, limit: int = -1) -> bytes:
    """The bytes of a regular file (the first `limit` of them when limit >= 0)."""
    with open_regular(path) as handle:
        return handle.read(limit)
