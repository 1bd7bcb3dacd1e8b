"""Detect stage: the rules engine, rule files, and one module a detector."""
