"""Pausing the cyclic garbage collector around bulk work (`paused`).

Layer 0.  Parsing a big flow, checking it, and replaying a history make
millions of small objects that live until the work ends and hold no cycles
worth collecting early; the collector would walk them again and again as
they pile up (time growing faster than the work: a 100,000-lead replay
spent a tenth of its time in it).  Reference counting still frees
everything that is not in a cycle; the collector runs again afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block; as it was after it (a pause
    nested in another leaves the outer one paused)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
