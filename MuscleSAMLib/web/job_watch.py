"""Wait for a scene-bridge :class:`~MuscleSAMLib.scene_bridge.jobs.Job` without blocking the page.

The engine runs on the bridge's worker thread; this coroutine, on the server's event loop (the
thread that owns the MRML scene), polls ``job.done()``, reports the elapsed time so the page shows
progress, and hands the job back for ``finish()`` (the MRML writes) on that same thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

POLL_SECONDS = 0.1
TICK_SECONDS = 0.5


async def wait_for_job(job: Any, on_tick: Callable[[float], None], poll: float = POLL_SECONDS) -> Any:
    """Return ``job`` once its worker is done, calling ``on_tick(elapsed_s)`` about twice a second."""
    started = time.perf_counter()
    last_tick = 0.0
    while not job.done():
        elapsed = time.perf_counter() - started
        if elapsed - last_tick >= TICK_SECONDS:
            last_tick = elapsed
            on_tick(elapsed)
        await asyncio.sleep(poll)
    return job
