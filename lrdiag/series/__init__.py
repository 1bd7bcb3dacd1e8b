"""Tidy series: the one representation of a run that every later stage reads."""

from lrdiag.series.model import Problem, ReadResult, Run, Series

__all__ = ["Problem", "ReadResult", "Run", "Series"]
