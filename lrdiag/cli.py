"""The command line: `lrdiag analyze`, `lrdiag rules`. User errors are one line on stderr, exit 2."""

from __future__ import annotations

import sys
import traceback

import click

from lrdiag import __version__
from lrdiag.errors import LrdiagError
from lrdiag.series.roles import parse_role_overrides

FORMATS = ("text", "json")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lrdiag")
def cli() -> None:
    """Diagnose training runs from their logs (TensorBoard, CSV, JSON)."""


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--role", "roles", multiple=True, metavar="ROLE=TAG",
              help="Set a metric's role, e.g. --role val_loss=my/valid_metric (repeatable).")
@click.option("--no-verify", is_flag=True, help="Skip TFRecord checksum verification (faster, trusts the files).")
@click.option("--jobs", type=click.IntRange(1, None), default=None, help="Worker processes (default: one per core).")
def analyze(paths, output_format, roles, no_verify, jobs) -> None:
    """Read every training log under PATHS and report each run."""
    from lrdiag.pipeline import Options, analyze as run_analysis
    from lrdiag.render import jsonout, text

    options = Options(verify=not no_verify, roles=parse_role_overrides(roles, "--role"))
    doc = run_analysis(list(paths), options, jobs=jobs)
    if output_format == "json":
        click.echo(jsonout.render(doc))
    else:
        click.echo(text.render(doc, color=sys.stdout.isatty()))


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
        click.echo(f"lrdiag: error: {error.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as error:
        click.echo(f"lrdiag: error: {error.format_message()}", err=True)
        sys.exit(2)
    except LrdiagError as error:
        click.echo(f"lrdiag: error: {error}", err=True)
        sys.exit(2)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - a bug: show it in full, with where to report it
        traceback.print_exc()
        click.echo("lrdiag: internal error: this is a bug in lrdiag, please report it with the traceback above",
                   err=True)
        sys.exit(2)
