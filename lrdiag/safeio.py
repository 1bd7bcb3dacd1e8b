"""Writing outputs without losing a user's file: a temporary file in the same folder, then an atomic rename.

A write that fails half-way (a full disk, a crash, Ctrl-C) leaves the old file as it was; an output
path that is a symbolic link is refused, never written through; an output that is one of the inputs
(the same file, by device and inode, whatever path names it) is refused, so that a report cannot
overwrite the log it was made from.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from lrdiag.errors import LrdiagError


def check_output(path: str | os.PathLike, inputs=(), what: str = "output") -> Path:
    """`path` as an output: not a link, not a folder or device, not one of `inputs`; else a user error."""
    path = Path(path)
    if path.is_symlink():
        raise LrdiagError(f"{path}: the {what} is a symbolic link, and lrdiag does not write through links: "
                          "name the file itself, or remove the link")
    if path.exists() and not path.is_file():
        raise LrdiagError(f"{path}: the {what} must be a file, and this is a folder or a device")
    if path.exists():
        here = os.stat(path)
        for source in inputs:
            try:
                there = os.stat(source)
            except OSError:
                continue
            if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                raise LrdiagError(f"{path}: the {what} is one of the inputs ({source}); writing it would destroy it: "
                                  "name another file")
    return path


def write_bytes(path: str | os.PathLike, data: bytes, inputs=(), what: str = "output") -> None:
    """Write `data` to `path` through a temporary file in its folder and os.replace; refused as check_output
    refuses; a failure is a user error naming the path, and leaves any old file untouched."""
    path = check_output(path, inputs, what)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent or ".")
    except OSError as error:
        raise LrdiagError(f"{path}: cannot write the {what}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600): give it the mode a plain open() would have, or the old file's.
        os.chmod(temporary, os.stat(path).st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise LrdiagError(f"{path}: cannot write the {what}: {error.strerror or error}") from None
        raise


def write_text(path: str | os.PathLike, text: str, inputs=(), what: str = "output") -> None:
    write_bytes(path, text.encode("utf-8"), inputs, what)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask



MANIFEST = ".lrdiag-manifest"  # no log suffix: discovery never takes it for a log


def check_folder(folder: str | os.PathLike, what: str) -> list[str]:
    """What lrdiag may remove from `folder` before writing into it again (the files its manifest lists), or a
    user error when the folder is not lrdiag's to write into: a link, a file, a folder holding files lrdiag did
    not write, a manifest naming anything outside the folder. Nothing is touched: commands call this first."""
    folder = Path(folder)
    if folder.is_symlink():
        raise LrdiagError(f"{what} {folder}: is a symbolic link, and lrdiag does not write through links")
    if folder.exists() and not folder.is_dir():
        raise LrdiagError(f"{what} {folder}: exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return []
    manifest = folder / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        raise LrdiagError(f"{what} {folder}: the folder holds files that lrdiag did not write (it has no "
                          f"{MANIFEST}); name a new or empty folder")
    return _listed(folder, manifest, what)


def claim_folder(folder: str | os.PathLike, what: str) -> Path:
    """Make `folder` lrdiag's to write into: create it, or take back one that lrdiag made (it holds a
    manifest), removing only the files that manifest lists. A link, or a folder with files lrdiag did
    not write, is refused: nothing of the user's is deleted or written through."""
    folder = Path(folder)
    targets = check_folder(folder, what)
    for target in targets:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    real = os.path.realpath(folder)
    for target in sorted({os.path.dirname(t) for t in targets}, key=len, reverse=True):
        while target != real:  # the folders that the removal emptied
            try:
                os.rmdir(target)
            except OSError:
                break
            target = os.path.dirname(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LrdiagError(f"{what} {folder}: cannot create the folder: {error.strerror or error}") from None
    record_folder(folder, [], what)  # an unwritable folder shows now, before any work
    return folder


def record_folder(folder: Path, files: list, what: str) -> None:
    """The manifest of what lrdiag wrote under `folder` (paths relative to it)."""
    listed = sorted({Path(file).relative_to(folder).as_posix() for file in files})
    write_text(folder / MANIFEST, json.dumps({"kind": "lrdiag-output", "files": listed}, indent=1) + "\n",
               what=f"manifest of {what}")


def _listed(folder: Path, manifest: Path, what: str) -> list[str]:
    """The real paths of the files a manifest lists, each checked to lie in `folder` with no link on the way."""
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        assert isinstance(listed, list) and all(isinstance(name, str) for name in listed)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise LrdiagError(f"{what} {folder}: its {MANIFEST} is damaged, so lrdiag cannot tell its files from "
                          "yours; name a new or empty folder") from None
    real = os.path.realpath(folder)
    targets = [os.path.realpath(manifest)]
    for name in listed:
        target = os.path.normpath(os.path.join(real, name))
        # A name that climbs out, or a link on the way (a folder swapped for a link since): never followed.
        if os.path.isabs(name) or not target.startswith(real + os.sep) or os.path.realpath(target) != target:
            raise LrdiagError(f"{what} {folder}: {MANIFEST} lists {name!r}, which is not a file lrdiag wrote "
                              "there; nothing was removed")
        targets.append(target)
    return targets
