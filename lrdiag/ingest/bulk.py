"""Building very many small objects at once (a Series per tag) without the cyclic GC's repeated scans.

CPython runs a collection every few hundred new container objects, and each older-generation
collection walks every object alive; creating 2M series then spends more time in those scans
than in the series (7.1 s instead of 4.7 s for 2M). The objects built here hold no cycles, so
pausing the collector while they are made loses nothing; it runs again as before afterwards,
the objects made meanwhile (and the caller's others) counted as old ones, which only a full
collection walks.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # what was made here goes to the oldest generation as it is: the next young collection
            # would otherwise walk every one of them (0.1 s after a million series) to find no cycle
            gc.freeze()
            gc.unfreeze()
            gc.enable()
