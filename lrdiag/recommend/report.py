"""Terminal output of `lrdiag recommend`: per run its findings, its ranked candidates with code, the verdict."""

from __future__ import annotations

import shutil
import textwrap

import click

from lrdiag.recommend import candidates as candidate_rules
from lrdiag.render.view import inert_doc

_MARKS = {"confirmed": ("CONFIRMED", "green"), "not confirmed": ("not confirmed", "yellow"),
          "inconclusive": ("inconclusive", "yellow"), "failed": ("FAILED", "red")}


def _lr_path(curve: list) -> str:
    """The LR's landmarks: start, highest, end."""
    start, end = curve[0], curve[-1]
    top = max(curve, key=lambda point: point[1])
    marks = [start] + ([top] if top not in (start, end) else []) + [end]
    return " -> ".join(f"{lr:.3g} (step {step})" for step, lr in marks)


def render(doc: dict, color: bool = False, width: int | None = None) -> str:
    doc = inert_doc(doc, keep=("code",))  # names from logs may hold newlines and terminal codes
    width = min(width or shutil.get_terminal_size((100, 24)).columns, 110)
    style = (lambda text, **kw: click.style(text, **kw)) if color else (lambda text, **kw: text)
    wrap = lambda text, indent: textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)  # noqa: E731
    out: list[str] = []
    for run in doc["runs"]:
        out.append(style(f"{run['run']}  ({len(run['findings'])} finding{'s' if len(run['findings']) != 1 else ''})",
                         bold=True))
        for finding in run["findings"]:
            out.append(f"  {finding['rule']} {finding['name']}  {finding['metric']}: {finding['message']}")
        if not run["findings"]:
            out.append("  no findings: keep the schedule")
        elif not run["candidates"]:
            out.append("  no schedule change proposed for these findings: they do not point at the learning rate")
        replay = run.get("replay")
        for rank, candidate in enumerate(run["candidates"], 1):
            loop = "" if candidate.get("kind", "schedule") == "schedule" else "a change to the training loop; "
            head = f"  {rank}. {candidate['name']}  ({loop}addresses {', '.join(candidate['addresses'])})"
            if candidate.get("replay"):
                mark, hue = _MARKS[candidate["replay"]["status"]]
                head += "  " + style(mark, fg=hue, bold=True)
            out.append(style(head, bold=True))
            out.append(wrap(candidate["rationale"], "     "))
            if candidate.get("replay"):
                out.append(wrap(f"replay: {candidate['replay']['reason']}", "     "))
            if candidate["lr_curve"]:
                out.append(f"     LR: {_lr_path(candidate['lr_curve'])}")
            elif not candidate_rules.torch_available():
                out.append(f"     LR curve: needs torch ({candidate_rules.REPLAY_EXTRA})")
            out.extend("       " + line for line in candidate["code"].rstrip("\n").splitlines())
        if replay:
            out.extend(_replay_lines(replay, run["candidates"], wrap))
        out.append("")
    for error in doc.get("errors", []):
        out.append(f"error: {error}")
    return "\n".join(out).rstrip("\n")


def _replay_lines(replay: dict, candidates: list, wrap) -> list[str]:
    control = replay["control"]
    seeds = len(control["seeds"])
    one = replay["replay_seconds_median"]
    at_once = f", {replay['concurrency']} at a time" if replay["concurrency"] else ""
    replayed = len(replay["ranking"])
    lines = [wrap(f"replays: the control and {replayed} candidate{'s' if replayed != 1 else ''} x "
                  f"{seeds} seed{'s' if seeds != 1 else ''}, {replay['steps']} steps from step {replay['start']}, "
                  f"on {replay['device']} ({replay['executor']}{at_once}): {replay['replays']} replays in "
                  f"{replay['wall_seconds']:.1f} s" + (f" (median replay: {one:.1f} s)" if one else "")
                  + f"; logs under {replay['out']}/", "  ")]
    if replay.get("gpu"):
        gpu = replay["gpu"]
        lines.append(f"  GPU utilisation: mean {gpu['utilization_mean_pct']:.0f} %, max {gpu['utilization_max_pct']:.0f} %")
    found = ", ".join(f"{rule} in {count}/{seeds} seeds" for rule, count in control["findings"].items()) or "no findings"
    losses = [value for value in control["horizon_loss"] if isinstance(value, float)]
    loss = f"; horizon loss {sum(losses) / len(losses):.4g} (spread {control['spread']:.3g})" if losses else ""
    if not any(status in ("failed", "timeout") for status in control["statuses"]):
        lines.append(wrap(f"control (the logged schedule): {found}{loss}", "  "))
    for reason in control["reasons"]:
        lines.append(wrap(f"control: {reason}", "  "))
    for note in replay["notes"]:
        lines.append(wrap(f"note: {note}", "  "))
    confirmed = [c for c in candidates if c["confirmed"]]
    if replay.get("failed"):
        lines.append(wrap(f"no verdict: {replay['failed']}", "  "))
    elif confirmed:
        best = confirmed[0]
        lines.append(wrap(f"verdict: use {best['name']}: {best['replay']['reason']}", "  "))
    else:
        lines.append(wrap("verdict: no candidate confirmed; keep the schedule, or replay longer or with more seeds", "  "))
    return lines
