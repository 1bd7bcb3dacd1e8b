"""The command-line options that every command reading runs shares, defined once: which rules (--select,
--ignore, --rules), which config (--config) and which roles (--role), so that analyze, gate, baseline save,
report and recommend see the same findings from the same flags."""

from __future__ import annotations

from pathlib import Path

import click


def _codes(ctx, param, value: str | None) -> list[str] | None:
    if value is None:
        return None
    codes = [item.strip() for item in value.split(",") if item.strip()]
    if not codes and param.name == "select":
        raise click.BadParameter("empty: name at least one rule by code, name or code prefix (`lrdiag rules` "
                                 "lists them), or leave --select out for every rule")
    return codes


SELECT = click.option("--select", metavar="CODES", callback=_codes,
                      help="Only these rules: comma-separated codes, names or code prefixes (LRD101,loss.stall,LRD2).")
IGNORE = click.option("--ignore", metavar="CODES", callback=_codes, help="Skip these rules (same forms as --select).")
RULE_DIRS = click.option("--rules", "rule_dirs", multiple=True, metavar="DIR",
                         type=click.Path(exists=True, file_okay=False, path_type=Path),
                         help="A folder of extra rule files (repeatable).")
CONFIG = click.option("--config", "config_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
                      help="Config file (default: lrdiag.toml, or pyproject.toml with [tool.lrdiag], here or above).")
ROLE = click.option("--role", "roles", multiple=True, metavar="ROLE=TAG",
                    help="Set a metric's role, e.g. --role val_loss=my/valid_metric (repeatable).")

EXECUTOR = click.option("--executor", type=click.Choice(("local", "ray")), default="local", show_default=True,
                        help="Where runs are analyzed: worker processes here, or Ray tasks on the cluster at --address "
                             "(or on a Ray started here).")
ADDRESS = click.option("--address", metavar="HOST:PORT",
                       help="The Ray cluster's head, for --executor ray (every node must see the runs at the same "
                            "paths).  [default: a Ray started on this machine]")


def executor_options(command):
    """--executor and --address on a command that reads many runs."""
    return EXECUTOR(ADDRESS(command))


def check_executor(executor: str, address: str | None, jobs: int | None) -> None:
    if address and executor != "ray":
        raise click.UsageError("--address is a Ray cluster's: use it with --executor ray")
    if address and jobs:
        raise click.UsageError("--jobs sets the workers started here; a Ray cluster at --address uses its own CPUs")


def rule_options(command):
    """--select, --ignore, --rules, --config and --role on a command."""
    for option in (ROLE, CONFIG, RULE_DIRS, IGNORE, SELECT):
        command = option(command)
    return command


def warn_unmatched_roles(roles: tuple[str, ...], tags) -> None:
    """A warning on stderr for each --role whose tag no run logs: a typo there silently changes nothing.
    `tags`: any iterable, looked at only when a --role is given."""
    import difflib

    from lrdiag.render.view import inert
    from lrdiag.series.roles import parse_role_overrides

    overrides = parse_role_overrides(roles, "--role")
    tags = set(tags) if overrides else set()  # a run's million tags made a set only when a --role asks
    for tag, role in overrides.items():
        if tag not in tags:
            close = difflib.get_close_matches(tag, sorted(tags), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            click.echo(inert(f"lrdiag: warning: --role {role}={tag}: no run logs a metric {tag!r}{hint}"), err=True)
