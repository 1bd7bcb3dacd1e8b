"""Read a discovered run: each file with its format's reader, merged into one tidy Run."""

from __future__ import annotations

from pathlib import Path

from lrdiag.ingest.discover import RunSpec, claimed_reader, store_reader
from lrdiag.ingest import tfevents
from lrdiag.series.model import Problem, ReadResult, Run
from lrdiag.series.roles import assign_roles



def read_run(spec: RunSpec, verify: bool = True, roles: dict[str, str] | None = None,
             contents: dict[Path, bytes] | None = None) -> Run:
    """Read every file of a run and merge their series; never raises for bad data. `contents`: the bytes
    of some files already in hand (what lrdiag.live.tail has of a live run), read instead of the files."""
    run = Run(spec.name, "", [str(path) for path in spec.files])
    if spec.unlisted:
        run.files, run.source = [spec.where], "unknown"
        run.problems.append(Problem(spec.where, "", f"cannot read this folder: {spec.unlisted}"))
        return run
    if spec.store:  # a run in a tracker's store: the store reads it whole
        result = _guarded(store_reader(spec.store).read, spec.where, Path(spec.where), run=spec.run)
        run.files, run.source, run.series = [spec.where], result.source, result.series
        run.problems.extend(result.problems)
        run.notes.extend(result.notes)
        assign_roles(run.series, roles)
        return run
    sources: list[str] = []
    for prefix in sorted(set(spec.files.values())):
        # Each file's reader as discovery chose it (a CSV or JSON file's claim reads its first 64 KiB), or sniffed here.
        readers = {path: claimed_reader(spec, path) for path, p in spec.files.items() if p == prefix}
        event_files = [path for path, reader in readers.items() if reader is tfevents]
        results: list[tuple[Path | None, ReadResult]] = []
        if event_files:
            results.append((None, _guarded(tfevents.read_files, event_files, event_files[0], verify=verify,
                                            contents=contents)))
        for path, reader in readers.items():
            if reader is None:
                run.problems.append(Problem(str(path), "", "not a training log lrdiag can read (expected TensorBoard "
                                                           "event files, a CSV log or a JSON log)"))
            elif reader is not tfevents:
                data = contents.get(path) if contents else None
                results.append((path, _guarded(reader.read, path, path, **({"data": data} if data is not None else {}))))
        for path, result in results:
            if result.source not in sources:
                sources.append(result.source)
            run.problems.extend(result.problems)
            run.notes.extend(f"{prefix}{note}" if prefix else note for note in result.notes)
            if not run.series and not prefix:  # the first file's series, named by their tags already: taken whole
                run.series = result.series  # (a log of a million keys: no second dict of them)
                continue
            for tag, series in result.series.items():
                name = prefix + tag
                if name in run.series and path is not None:
                    name = f"{prefix}{path.name}/{tag}"  # two files of one run log the same tag
                series.tag = name
                run.series[name] = series
    run.source = "+".join(sources) or "unknown"
    assign_roles(run.series, roles)
    return run


def _guarded(function, argument, path: Path, **options) -> ReadResult:
    """A reader that raises has a bug; the run still goes on, with the error as its problem."""
    try:
        return function(argument, **options)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - one bad file must never stop the other runs
        return ReadResult("unknown", problems=[Problem(str(path), "", f"lrdiag failed to read this file "
                                                                       f"({type(error).__name__}: {error}); "
                                                                       "this is a bug, please report it")])
