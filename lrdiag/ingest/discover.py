"""Find runs under the paths given: a run is a folder holding log files, or one log file.

As in TensorBoard, each folder with event files is a run, named by its path relative to the
argument. Sibling `train/` and `validation/` (or `val/`, `eval/`, `test/`, CatBoost's `learn/`)
folders of one experiment reuse the same tag names, so they become one run whose tags are
prefixed with the folder name (`train/epoch_loss`, `validation/epoch_loss`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.errors import LrdiagError
from lrdiag.ingest import csvlog, jsonlog, tfevents

READERS = (tfevents, csvlog, jsonlog)
_SNIFFED_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".log", ".txt"}
_HEAD_BYTES = 64 * 1024
TRAIN_FOLDERS = {"train", "training", "learn"}
VAL_FOLDERS = {"validation", "val", "valid", "eval", "evaluation", "test"}


@dataclass
class RunSpec:
    """A run to read: its name and its log files, each with the tag prefix it contributes."""

    name: str
    files: dict[Path, str] = field(default_factory=dict)  # file -> tag prefix ("" or "train/")


def reader_for(path: Path):
    """The reader module that claims this file, or None."""
    if tfevents.claims(path, b""):
        return tfevents
    if path.suffix.lower() not in _SNIFFED_SUFFIXES:
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
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
        root = Path(argument)
        if not root.exists():
            raise LrdiagError(f"{argument}: no such file or folder")
        if root.is_file():
            runs.append(RunSpec(argument, {root: ""}))
            continue
        runs.extend(_runs_in_folder(root))
    return runs


def _runs_in_folder(root: Path) -> list[RunSpec]:
    folders: dict[Path, list[Path]] = {}
    # Links are followed (a run folder may be a symlink to logs kept elsewhere); a link back to a
    # folder on the way down from the root is not, so that link cycles end.
    chains = {os.fspath(root): {os.path.realpath(root)}}
    for folder, subfolders, files in os.walk(root, onerror=None, followlinks=True):
        chain = chains.pop(folder)
        subfolders[:] = [name for name in sorted(subfolders)
                         if os.path.realpath(os.path.join(folder, name)) not in chain]
        chains.update({os.path.join(folder, name): chain | {os.path.realpath(os.path.join(folder, name))}
                       for name in subfolders})
        logs = [Path(folder) / name for name in sorted(files) if reader_for(Path(folder) / name)]
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
    return sorted(merged.values(), key=lambda spec: spec.name)


def _name(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root)
    return (root.resolve().name or str(root)) if relative == Path(".") else relative.as_posix()
