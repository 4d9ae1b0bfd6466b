"""Hooks for every test folder: print the bad-input table (cases tried, passed, per entry point) at the end."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """The table of ``Testing/Python/bad_input_table.py`` when any case ran (CLI, scene bridge, web, cancel)."""
    module = sys.modules.get("bad_input_table")
    if module is not None and module.RESULTS:
        terminalreporter.section("bad-input suite")
        terminalreporter.write_line(module.summary_table())
