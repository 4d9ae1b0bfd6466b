"""One table of bad-input cases over every entry point (CLI, scene bridge, web), printed at the end.

Test modules wrap each case in :func:`record`; ``conftest.pytest_terminal_summary`` prints
:func:`summary_table` (cases tried, passed, per entry point) after the session.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

RESULTS: list[tuple[str, str, bool]] = []  # (entry point, case, passed)


@contextmanager
def record(entry_point: str, case: str) -> Iterator[None]:
    """Run one case; it counts as passed only when the block finishes without an exception."""
    ok = False
    try:
        yield
        ok = True
    finally:
        RESULTS.append((entry_point, case, ok))


def summary_table() -> str:
    """Every recorded case with its result, then totals per entry point and overall."""
    width = max([len(c) for _, c, _ in RESULTS] + [30])
    lines = [f"{'entry point':14s} {'bad-input case':{width}s} result"]
    lines += [f"{e:14s} {c:{width}s} {'passed' if ok else 'FAILED'}" for e, c, ok in RESULTS]
    for entry in sorted({e for e, _, _ in RESULTS}):
        rows = [ok for e, _, ok in RESULTS if e == entry]
        lines.append(f"{entry}: {len(rows)} tried, {sum(rows)} passed")
    lines.append(f"all entry points: {len(RESULTS)} tried, {sum(ok for _, _, ok in RESULTS)} passed")
    return "\n".join(lines)
