"""Corrections: the per-case bundle of corrected labels, prediction, uncertainty, edits and provenance."""

from __future__ import annotations
