"""`lrdiag recommend`: schedule candidates for each run's findings; with --trainer, replays that confirm one."""

from __future__ import annotations

import json
import sys

import click

from lrdiag.options import rule_options, warn_unmatched_roles

EXECUTORS = ("local", "ray")  # as executors.EXECUTORS, without importing it when the CLI starts


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(("text", "json")), default="text", show_default=True)
@rule_options
@click.option("--trainer", metavar="MODULE:FUNCTION",
              help="Replay the candidates with this trainer (module:function, path/to/file.py:function, or a class); "
                   "see docs/replay.md.")
@click.option("--steps", type=click.IntRange(1, None), default=None,
              help="Steps each replay trains.  [default: the run's length]")
@click.option("--seeds", type=click.IntRange(1, None), default=3, show_default=True,
              help="Seeds each schedule is replayed with (paired: seed k of a candidate vs seed k of the control).")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True)
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: worker processes on this machine; ray: Ray tasks (pip install 'lrdiag[ray]').")
@click.option("--ray-address", default=None, help="An existing Ray cluster (default: start a local one).")
@click.option("--out", type=click.Path(file_okay=False), default="lrdiag-replays", show_default=True,
              help="Replay logs go to OUT/<control|candidate>/seed<k>/ (TensorBoard). OUT must be new, empty, or "
                   "one lrdiag wrote: its .lrdiag-manifest lists lrdiag's files, the only ones it removes.")
@click.option("--timeout", type=click.FloatRange(0, None, min_open=True), default=900.0, show_default=True,
              help="Seconds a replay may take before it is killed and marked failed.")
@click.option("--from-checkpoint", "start", type=click.IntRange(0, None), default=0, metavar="STEP",
              help="Start replays at this step of the run (the trainer's load_checkpoint restores it).")
@click.option("--jobs", type=click.IntRange(1, None), default=None,
              help="Replays at once.  [default: one per core; Ray: as the cluster fits]")
@click.option("--eval-every", type=click.IntRange(0, None), default=None,
              help="Log the trainer's held-out loss every N steps.  [default: 12 times a replay]")
@click.option("--gpu-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Ray: the GPU share each replay asks for.  [default: 1/8]")
def recommend(paths, output_format, roles, config_path, select, ignore, rule_dirs, trainer, steps, seeds, device,
              executor, ray_address, out, timeout, start, jobs, eval_every, gpu_fraction) -> None:
    """Propose learning-rate schedules for the findings in PATHS, as runnable PyTorch code.

    With --trainer, replay the logged schedule (the control) and each candidate for a few
    steps and seeds, score the replays with the same rules, and confirm the candidates that
    remove what they address without a worse loss.

    Exit status: 0 done; 2 usage, config or input error (a path without a readable run, a trainer
    that cannot load a checkpoint for --from-checkpoint), or replays that give no verdict because
    the control, or every candidate, crashed or timed out.
    """
    from lrdiag import __version__, safeio
    from lrdiag.config import project_setup
    from lrdiag.errors import LrdiagError
    from lrdiag.ingest.runs import read_run
    from lrdiag.output import SCHEMA
    from lrdiag.pipeline import find_specs, unread_error
    from lrdiag.recommend import harness, report
    from lrdiag.recommend.candidates import SCHEDULE, horizon_of, propose

    # The engine, rule options and roles that `lrdiag analyze` uses here: the same findings.
    _, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    if trainer:
        safeio.check_folder(out, "--out")  # a folder lrdiag may not write into: refused before any work
        from lrdiag.recommend.candidates import REPLAY_EXTRA, torch_available
        from lrdiag.recommend.trainer import check_checkpoint, load, resolve

        if not torch_available():
            raise LrdiagError(f"--trainer: replays need torch: {REPLAY_EXTRA}")
        load(resolve(trainer))  # a trainer that does not import: one line, before any work
        if start:
            check_checkpoint(resolve(trainer))
    specs, errors = find_specs(list(paths))
    if trainer and errors:
        raise LrdiagError(errors[0])
    if trainer and len(specs) != 1:
        raise LrdiagError(f"--trainer replays one run, and {' '.join(paths)} holds {len(specs)}: name one of "
                          + ", ".join(spec.name for spec in specs[:5]))
    entries, tags = [], set()
    for spec in specs:
        run = read_run(spec, roles=role_map)
        tags |= set(run.series)
        if unread := unread_error(run):
            if trainer:
                raise LrdiagError(unread)
            errors.append(unread)
            continue
        findings = sorted(engine.run(run))
        candidates = propose(run, findings)
        entry = {"run": run.name, "findings": [f.to_dict() for f in findings], "candidates": candidates}
        # Only schedules replay: clipping, batch inspection and a range test change the training loop,
        # which the trainer protocol does not reach; they stay proposals (confirmed None, no replay).
        schedules = [candidate for candidate in candidates if candidate.kind == SCHEDULE]
        if trainer and schedules:
            plan = harness.Plan(trainer, steps, seeds, device, executor, ray_address, out, timeout, start, jobs,
                                eval_every, gpu_fraction)
            entry["replay"] = harness.replay(run, horizon_of(run), schedules, engine, plan, progress=_progress())
            if entry["replay"]["failed"]:
                errors.append(f"{run.name}: no verdict: {entry['replay']['failed']}")
        entry["candidates"] = [candidate.to_dict() for candidate in entry["candidates"]]
        entries.append(entry)
    warn_unmatched_roles(roles, tags)
    doc = {"schema": SCHEMA, "lrdiag": __version__, "runs": entries, "errors": errors}
    if output_format == "json":
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        click.echo(report.render(doc, color=sys.stdout.isatty()))
    if errors:
        sys.exit(2)


def _progress():
    """A line on stderr as each replay ends, when a person is watching; in a CI log, a line every
    pipeline.PROGRESS_EVERY seconds (a bar or a line per replay would flood it; silence looks hung)."""
    import time

    from lrdiag import pipeline

    tty = sys.stderr.isatty()
    began = last = time.monotonic()
    done = 0

    def finished(result: dict) -> None:
        nonlocal last, done
        done += 1
        now = time.monotonic()
        seconds = f" in {result['seconds']:.1f} s" if result.get("seconds") else ""
        reason = f": {result['reason']}" if result["reason"] else ""
        line = f"replayed {result['label']} seed {result['seed']}: {result['status']}{seconds}{reason}"
        if tty:
            click.echo(f"  {line}", err=True)
        elif now - last >= pipeline.PROGRESS_EVERY:
            last = now
            click.echo(f"lrdiag: replays: {done} done, {now - began:.0f} s; last {line}", err=True)

    return finished
