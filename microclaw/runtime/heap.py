"""The garbage collector in long-running processes: what start-up built is frozen.

A full (generation 2) collection walks every tracked object: in a worker that is a few hundred
thousand objects of imported modules, SQLAlchemy's and Celery's structures, and each full pass
held the GIL for 100-240 ms on this 2-core machine, stalling every thread of the process at
once (the 100-300 ms tail of inbound -> agent start in ``bench/pipeline.py``). `freeze()` moves
everything alive after start-up into the permanent generation (``gc.freeze``), so later
collections only walk what was allocated since. What start-up built lives as long as the
process anyway; a frozen object that does become garbage is kept (a bounded, one-time cost).
Freezing is cheap (the generations' lists are moved, nothing is walked).

Entry points call it once their process is set up (the worker after its warm-up, the host
before serving, beat when it starts); calling it again freezes what was built meanwhile.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze() -> int:
    """Freeze every tracked object; returns how many are frozen now. No collection first: that
    full pass is what this avoids (start-up leaves little garbage, and freezing it costs less)."""
    gc.freeze()
    count = gc.get_freeze_count()
    logger.debug("start-up objects frozen for the garbage collector", extra={"frozen": count})
    return count
