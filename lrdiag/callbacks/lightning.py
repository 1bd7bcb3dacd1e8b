"""Kept for code written before the callbacks moved: `from lrdiag.integrations.lightning import LrdiagCallback`."""

from lrdiag.integrations.lightning import FINDINGS_FILE, LrdiagCallback  # noqa: F401
