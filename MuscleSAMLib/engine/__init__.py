"""The interactive engine: box prompts -> ensemble predictions with uncertainty, cached and cancellable."""

from __future__ import annotations
