"""Headless use cases on the core engine: what the CLI and learning from corrections call (no Slicer, no Qt).

``segment`` (segment one case from box prompts and write every output on the input's grid),
``evaluate`` (an ensemble against labels with label-derived tight boxes, plus the baselines).
The scene bridge and the web app do not use these: they run the engine interactively.
"""
