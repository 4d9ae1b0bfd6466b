"""Single source of the software version (recorded in every report's provenance)."""

from __future__ import annotations

__version__ = "0.1.0"
