"""Live runs: logs followed while they are written (`lrdiag watch`) and metrics fed in process (callbacks)."""
