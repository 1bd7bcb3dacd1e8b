"""Recommend a learning-rate schedule from a run's findings, and confirm it by replaying it."""
