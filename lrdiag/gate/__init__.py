"""Gate stage: compare a candidate run with baselines and say whether training regressed."""
