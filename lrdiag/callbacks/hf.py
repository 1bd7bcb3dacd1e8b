"""Kept for code written before the callbacks moved: `from lrdiag.integrations.transformers import LrdiagCallback`."""

from lrdiag.integrations.transformers import FINDINGS_FILE, LrdiagCallback  # noqa: F401
