"""Single source of the software version (recorded in every report's provenance)."""

__version__ = "0.1.0"
