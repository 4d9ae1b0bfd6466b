"""Command-line front end ``musclesam`` (wiring only: the work happens in the engine modules)."""

from __future__ import annotations
