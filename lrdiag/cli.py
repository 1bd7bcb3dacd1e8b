"""The command line: `lrdiag analyze`, `lrdiag rules`. User errors are one line on stderr, exit 2."""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

import click

from lrdiag import __version__
from lrdiag.detect.finding import SEVERITY_RANK
from lrdiag.errors import LrdiagError
from lrdiag.options import CONFIG, RULE_DIRS, check_executor, executor_options, rule_options, warn_unmatched_roles

FORMATS = ("text", "json", "junit", "github", "markdown")
# The commands that live in their own modules, each imported when it is run (or listed by --help), so that
# starting lrdiag for one command loads none of the others.
_ELSEWHERE = {"recommend": "lrdiag.recommend.command", "gate": "lrdiag.gate.command",
              "baseline": "lrdiag.gate.command", "report": "lrdiag.render.report", "watch": "lrdiag.live.command"}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_ELSEWHERE})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in _ELSEWHERE:
            self.add_command(getattr(import_module(_ELSEWHERE[name]), name))
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name="lrdiag")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Diagnose training runs from their logs (TensorBoard, CSV, JSON).

    \b
    Exit status (every command):
      0  done, nothing to fail on
      1  analyze: findings at or above --fail-on (or damaged logs with
         --fail-on-problems); gate: the candidate regressed
      2  usage or config error; input that could not be read (a path that holds
         no run, a run none of whose files could be read, an unreadable baseline);
         recommend: replays that give no verdict; an output lrdiag refuses to write"""
    if ctx.invoked_subcommand is None:  # bare `lrdiag`: the help, as asked for, not an error
        click.echo(ctx.get_help())


def _exit_code(doc: dict, fail_on: str, fail_on_problems: bool = False) -> int:
    if fail_on_problems and any(run["problems"] for run in doc["runs"]):
        return 1
    if fail_on == "never":
        return 0
    from lrdiag.render.view import incidents

    worst = SEVERITY_RANK[fail_on]  # an incident is as severe as its headline, the most severe of its findings
    found = sum(SEVERITY_RANK[i["severity"]] <= worst for run in doc["runs"] for i in incidents(run))
    return 1 if found else 0


def _config(config_path: Path | None):
    from lrdiag.config import project_config

    return project_config(config_path)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="text", show_default=True)
@rule_options
@click.option("--fail-on", type=click.Choice(("error", "warning", "never")), default=None,
              help="Exit 1 when a finding is at least this severe [default: error].")
@click.option("--fail-on-problems", is_flag=True, default=None,
              help="Exit 1 when a log was damaged (a read problem), even if what was read is clean.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even with findings (2 still means a usage or input error).")
@click.option("--no-verify", is_flag=True, help="Skip TFRecord checksum verification (faster, trusts the files).")
@click.option("--jobs", type=click.IntRange(1, None), default=None, help="Worker processes (default: one per core).")
@executor_options
def analyze(paths, output_format, select, ignore, rule_dirs, config_path, fail_on, fail_on_problems, exit_zero,
            roles, no_verify, jobs, executor, address) -> None:
    """Read every training log under PATHS, report each run and what went wrong in it.

    \b
    Exit status:
      0  every path held runs, and none has a finding at or above --fail-on
      1  a finding at or above --fail-on (or, with --fail-on-problems, a damaged log)
      2  usage or config error, or input that could not be read: a path with no run
         (empty, unreadable, no logs), a run none of whose files could be read"""
    from lrdiag.config import project_setup
    from lrdiag.pipeline import Options, analyze as run_analysis
    from lrdiag.render import jsonout, text

    check_executor(executor, address, jobs)
    config, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    doc = run_analysis(list(paths), Options(verify=not no_verify, roles=role_map, engine=engine), jobs=jobs,
                       executor=executor, address=address)
    warn_unmatched_roles(roles, (tag for run in doc["runs"] for tag in run["metrics"]))
    fail_on = fail_on or config.fail_on or "error"
    if output_format == "json":  # written a part at a time: a run of a million metrics is 280 MB of it
        jsonout.write(doc, click.get_text_stream("stdout"))
        click.echo()
    elif output_format == "text":
        click.echo(text.render(doc, color=sys.stdout.isatty()))
    else:
        from lrdiag.gate.command import append_step_summary, render

        click.echo(render(doc, output_format, fail_on))
        if output_format == "github":
            append_step_summary(doc, fail_on)
    if doc["errors"] and output_format != "text":
        for error in doc["errors"]:  # stdout is often a file for these formats: say it where a person looks
            _error(error)
    if doc["errors"]:
        sys.exit(2)
    fail_on_problems = config.fail_on_problems if fail_on_problems is None else fail_on_problems
    sys.exit(0 if exit_zero else _exit_code(doc, fail_on, fail_on_problems))


@cli.command("rules")
@click.argument("rule", required=False)
@RULE_DIRS
@CONFIG
def rules_command(rule, rule_dirs, config_path) -> None:
    """List the rules, or print one RULE's documentation (by code, name or alias)."""
    import shutil

    from lrdiag.config import rule_set

    rules = rule_set(_config(config_path), rule_dirs)
    width = shutil.get_terminal_size((100, 24)).columns
    if rule is None:
        click.echo(_rules_table(rules, width))
        return
    found = next((one for one in rules if rule in one.selectors()), None)
    if found is None:
        raise LrdiagError(f"unknown rule {rule!r} (`lrdiag rules` lists the codes and names)")
    click.echo(_rule_docs(found, width))


def _rules_table(rules, width: int) -> str:
    rows = [("code", "name", "category", "severity", "what it detects")]
    rows += [(r.code, r.name, r.category, r.severity, " ".join(r.docs["what"].split())) for r in rules]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    # The description takes what the terminal has left, and no less than 20 columns.
    room = max(width - sum(widths) - 2 * 4, 20)
    lines = []
    for row in rows:
        what = row[4] if len(row[4]) <= room else row[4][: room - 1] + "…"
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + what)
    return "\n".join(lines)


def _rule_docs(rule, width: int) -> str:
    import textwrap

    from lrdiag.detect.rulefile import DOC_HEADINGS

    def wrap(text: str, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width=max(width, 40) - 1, initial_indent=indent,
                             subsequent_indent=indent)

    out = [f"{rule.code}  {rule.name}",
           f"  {rule.severity} · {rule.category} · on {', '.join(rule.roles)} · detector {rule.detector}"]
    if rule.aliases:
        out.append(f"  aliases: {', '.join(rule.aliases)}")
    for key, heading in DOC_HEADINGS.items():
        out += ["", heading, wrap(rule.docs[key], "  ")]
    for name, spec in rule.specs.items():
        out += ["", f"  {name} = {spec.default!r}  ({spec.expected()})", wrap(spec.doc, "      ")]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit 2 for usage, config and input errors; a traceback for bugs."""
    try:
        cli.main(args=argv, prog_name="lrdiag", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("lrdiag: aborted", err=True)
        sys.exit(2)
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _error(f"{error.format_message()}{hint}")
        sys.exit(2)
    except click.ClickException as error:
        _error(error.format_message())
        sys.exit(2)
    except LrdiagError as error:
        _error(str(error))
        sys.exit(2)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - a bug: show it in full, with where to report it
        import traceback

        traceback.print_exc()
        click.echo("lrdiag: internal error: this is a bug in lrdiag, please report it with the traceback above",
                   err=True)
        sys.exit(2)


def _error(message: str) -> None:
    """The message on stderr, its control characters escaped; lrdiag's own lists keep their lines, but a line
    that would start with `::` (a workflow command, which GitHub Actions reads on stderr too) stays escaped."""
    from lrdiag.render.view import inert

    lines = [inert(line) for line in message.split("\n")]
    kept = lines[:1]
    for line in lines[1:]:
        if line.lstrip().startswith("::"):
            kept[-1] += "\\n" + line
        else:
            kept.append(line)
    click.echo("lrdiag: error: " + "\n".join(kept), err=True)

