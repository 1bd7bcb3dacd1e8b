"""Find runs under the paths given: a run is a folder holding log files, or one log file, or a
run kept in a tracker's store (a folder or file holding many runs, or a tracking server's URL).

As in TensorBoard, each folder with event files is a run, named by its path relative to the
argument. Sibling `train/` and `validation/` (or `val/`, `eval/`, `test/`, CatBoost's `learn/`)
folders of one experiment reuse the same tag names, so they become one run whose tags are
prefixed with the folder name (`train/epoch_loss`, `validation/epoch_loss`).

A store claims the folders and files that are its own (an MLflow experiment folder, a W&B
`wandb/` folder, an MLflow SQLite database): their runs are named by the store, after the
store's place under the argument, and nothing inside a claimed folder is scanned again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.errors import LrdiagError
from lrdiag.ingest import csvlog, files, jsonlog, mlflow_files, mlflow_server, mlflow_sqlite, tfevents, wandb_local

READERS = (tfevents, csvlog, jsonlog)
# Each store: NAME, claim(path) -> [(run name, where, run id)] or None, read(where, run id).
STORES = (mlflow_files, mlflow_sqlite, wandb_local)
URL_STORES = (mlflow_server,)  # the same, claiming URL arguments: claim(url)
_SNIFFED_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".log", ".txt"}
_HEAD_BYTES = 64 * 1024
# A FIFO or device with one of these suffixes is taken for a log (and reported) without sniffing.
_DATA_SUFFIXES = {".csv": csvlog, ".tsv": csvlog, ".json": jsonlog, ".jsonl": jsonlog}
TRAIN_FOLDERS = {"train", "training", "learn"}
VAL_FOLDERS = {"validation", "val", "valid", "eval", "evaluation", "test"}


@dataclass
class RunSpec:
    """A run to read: its name and its log files, each with the tag prefix it contributes."""

    name: str
    files: dict[Path, str] = field(default_factory=dict)  # file -> tag prefix ("" or "train/")
    # file -> the module name of the reader that claimed it when the run was found, so that reading the run need
    # not sniff the file again (a name, not the module: a spec goes to worker processes); a file not in it is sniffed
    readers: dict[Path, str] = field(default_factory=dict)
    store: str = ""  # for a run in a store: the store's NAME,
    where: str = ""  # the folder, file or URL that holds the run,
    run: str = ""    # and the run's id there ("" when `where` is the run itself)
    unlisted: str = ""  # why the folder `where` could not be listed: read as a run none of whose files could be


def store_reader(name: str):
    """The store module called `name`."""
    return next(store for store in STORES + URL_STORES if store.NAME == name)


def claimed_reader(spec: RunSpec, path: Path):
    """The reader module that claimed this file of the run when it was found, else the one that claims it now."""
    name = spec.readers.get(path)
    return next(reader for reader in READERS if reader.__name__ == name) if name else reader_for(path)


def reader_for(path: Path):
    """The reader module that claims this file, or None.

    A FIFO, device or socket is never opened here (a FIFO would block): when its name is a log's
    name, the reader that claims that name takes it and reports that it is not a regular file."""
    if tfevents.claims(path, b""):
        return tfevents
    if path.suffix.lower() not in _SNIFFED_SUFFIXES:
        return None
    try:
        head = files.read_bytes(path, _HEAD_BYTES)
    except files.NotRegularFile:
        head = b""
        if path.suffix.lower() in _DATA_SUFFIXES:
            return _DATA_SUFFIXES[path.suffix.lower()]
    except OSError:
        head = b""  # claimed by name alone; reading it later reports why it fails
    for reader in (csvlog, jsonlog):
        if reader.claims(path, head):
            return reader
    return None


def find_runs(arguments: list[str]) -> list[RunSpec]:
    """Every run under the arguments, in a stable order; a missing path is a usage error."""
    runs: list[RunSpec] = []
    for argument in arguments:
        claimed = _claimed(argument, "", URL_STORES)
        if claimed is not None:
            runs.extend(claimed)
            continue
        root = Path(argument)
        if not root.exists():
            raise LrdiagError(f"{argument}: no such file or folder")
        claimed = _claimed(root, "")
        if claimed is not None:
            runs.extend(claimed)
            continue
        if not root.is_dir():  # a log file, or a FIFO or device given by name: its reader says why it fails
            runs.append(RunSpec(argument, {root: ""}))
            continue
        runs.extend(_runs_in_folder(root))
    return runs


def _runs_in_folder(root: Path) -> list[RunSpec]:
    folders: dict[Path, dict[Path, str]] = {}  # folder -> its log files, each with its reader's module name
    stored: list[RunSpec] = []
    # Links are followed (a run folder may be a symlink to logs kept elsewhere), but each real
    # folder and file, known by (device, inode), is taken once, under the first path that reaches
    # it in sorted order: link cycles end, and links that branch (a/x -> b, a/y -> b, repeated at
    # every level) cannot make the walk, or a run's points, grow as 2^depth.
    seen = {_identity(root)}
    unlisted: list[RunSpec] = []

    def refused(error: OSError) -> None:
        """A subfolder that cannot be listed may hold runs: never skipped in silence. (The argument itself
        is the caller's to report, as a path that yields no run; a folder gone since it was seen held none.)"""
        folder = Path(error.filename)
        if folder != root and not isinstance(error, FileNotFoundError):
            unlisted.append(RunSpec(_name(root, folder), where=str(folder), unlisted=error.strerror or str(error)))

    for folder, subfolders, names in os.walk(root, onerror=refused, followlinks=True):
        claimed = _claimed(Path(folder), _prefix(root, Path(folder)))
        if claimed is not None:
            stored.extend(claimed)
            subfolders[:] = []
            continue
        subfolders[:] = [name for name in sorted(subfolders) if _first_visit(os.path.join(folder, name), seen)]
        logs = {}
        for name in sorted(names):
            path = Path(folder) / name
            claimed = _claimed(path, _prefix(root, path))
            if claimed is not None:
                if _first_visit(path, seen):
                    stored.extend(claimed)
                continue
            reader = reader_for(path)
            if reader and _first_visit(path, seen):
                logs[path] = reader.__name__
        if logs:
            folders[Path(folder)] = logs
    children: dict[Path, set[str]] = {}
    for folder in folders:
        if folder != root:
            children.setdefault(folder.parent, set()).add(folder.name.lower())
    merged: dict[Path, RunSpec] = {}
    for folder, logs in folders.items():
        parent = folder.parent
        siblings = children.get(parent, set())
        is_split = (folder != root and folder.name.lower() in TRAIN_FOLDERS | VAL_FOLDERS
                    and siblings & TRAIN_FOLDERS and siblings & VAL_FOLDERS)
        owner = parent if is_split else folder
        prefix = folder.name + "/" if is_split else ""
        spec = merged.setdefault(owner, RunSpec(_name(root, owner)))
        spec.files.update({log: prefix for log in logs})
        spec.readers.update(logs)
    return sorted([*merged.values(), *stored, *unlisted], key=lambda spec: spec.name)


def _claimed(path, prefix: str, stores=STORES) -> list[RunSpec] | None:
    """The runs of the store that claims this folder, file or URL, or None."""
    for store in stores:
        runs = store.claim(path)
        if runs is not None:
            return sorted((RunSpec(prefix + name, store=store.NAME, where=where, run=run) for name, where, run in runs),
                          key=lambda spec: spec.name)
    return None


def _prefix(root: Path, path: Path) -> str:
    """A store's runs are named after the folder that holds the store, relative to the argument."""
    relative = path.relative_to(root)
    return "" if relative.parent == Path(".") else relative.parent.as_posix() + "/"


def _identity(path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _first_visit(path: str, seen: set) -> bool:
    """True the first time a real file or folder is met (a broken link is always new: its reader reports it)."""
    identity = _identity(path)
    if identity is None:
        return True
    if identity in seen:
        return False
    seen.add(identity)
    return True


def _name(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root)
    return (root.resolve().name or str(root)) if relative == Path(".") else relative.as_posix()
