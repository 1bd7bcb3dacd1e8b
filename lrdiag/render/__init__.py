"""Render stage: one module an output format, each built from the output model."""
