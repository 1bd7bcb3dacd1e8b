"""Kept for code written before the callbacks moved: `from lrdiag.integrations.keras import LrdiagCallback`."""

from lrdiag.integrations.keras import LrdiagCallback  # noqa: F401
