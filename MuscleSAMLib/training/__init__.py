"""Fine-tuning: data, losses, optimisers, the trainer and the ensemble builder (``musclesam train``).

Training and inference share preprocessing (:mod:`MuscleSAMLib.intensity`,
:mod:`MuscleSAMLib.slice_geometry`); see :mod:`.model_io` for the one model-input convention.
"""
