"""The interactive engine: box prompts -> ensemble predictions with uncertainty, cached and cancellable.

``boxes`` (box prompts, THE physical-corners -> box rule), ``segmenter`` (with ``embedding_cache`` and
``worker``), ``assembly`` (multi-muscle), ``member_masks``, ``volume_run``, ``propagation``, ``review``,
``session`` (what is remembered about one volume between interactive runs; the bridge keeps one per volume node).
"""

from __future__ import annotations
