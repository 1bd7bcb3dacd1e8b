"""lrdiag: diagnose training runs from their logs.

The Python API (the command line runs the same functions)::

    import lrdiag
    df = lrdiag.read("runs/")             # every point of every run: run, metric, role, step, value, wall_time
    run = lrdiag.read_run("runs/exp1")    # one run: run.series[tag].steps / .values / .wall_times / .role
    result = lrdiag.analyze("runs/")      # result.findings, result.runs, result.to_dict(), result.report("r.html")
    result                                # in Jupyter: a summary, the findings and their charts

Names are imported on first use, so that `import lrdiag` (and `lrdiag --version`) stays quick: pandas is
loaded only when the API is.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers take it as true

__version__ = "0.1.0"

__all__ = ["read", "read_run", "analyze", "Analysis", "ReadWarning", "LrdiagError", "Run", "Series", "Problem"]

_HOMES = {
    "read": "lrdiag.api", "read_run": "lrdiag.api", "analyze": "lrdiag.api", "Analysis": "lrdiag.api",
    "ReadWarning": "lrdiag.api", "LrdiagError": "lrdiag.errors",
    "Run": "lrdiag.series.model", "Series": "lrdiag.series.model", "Problem": "lrdiag.series.model",
}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on first use
    from lrdiag.api import Analysis, ReadWarning, analyze, read, read_run
    from lrdiag.errors import LrdiagError
    from lrdiag.series.model import Problem, Run, Series


if not TYPE_CHECKING:  # hidden from type checkers, so that they flag a misspelt name

    def __getattr__(name: str):
        if name not in _HOMES:
            raise AttributeError(f"module 'lrdiag' has no attribute {name!r}")
        value = getattr(import_module(_HOMES[name]), name)
        globals()[name] = value  # found once, then an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted([*globals(), *__all__])
