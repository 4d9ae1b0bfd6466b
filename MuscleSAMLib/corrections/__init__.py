"""Learning from corrections (orchestration): plan, fine-tune the heads, evaluate before/after, publish.

``learning`` (the job), ``learning_report`` (its before/after table), ``learning_runner`` (the job as a
subprocess with progress and cancel, for the desktop module and the web app). The corrections bundle
itself is a file format: :mod:`MuscleSAMLib.outputs.bundle` (write, check) and
:mod:`MuscleSAMLib.outputs.corrected_cases` (read back for learning).
"""

from __future__ import annotations
