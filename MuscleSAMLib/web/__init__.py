"""MuscleSAM in the browser: a trame-slicer app on the scene bridge (``musclesam web``).

Modules: ``options`` (what the command line asks for), ``security`` (bind policy, access token, Host
and Origin checks), ``limits`` (HTTP body and websocket message sizes), ``paths`` (which server files
the page may open; safe file names), ``drag_box`` (a mouse drag on a slice view -> world RAS corners),
``scene_views`` (trame-slicer's Slicer app, slice views and layout), ``box_overlay`` (the drag
rectangle drawn in the page), ``job_watch`` (polls the bridge's worker job from the event loop),
``editing`` (trame-slicer's paint/erase effects), ``controller`` (every page action: one call into the
scene bridge), ``ui`` (the page), ``routes`` (export download, test-only state and actions),
``bundle_zip`` (the export as one zip), ``app`` (builds and starts the server).

Importing this package is cheap; trame, Slicer and torch are imported by :func:`app.serve`.
"""

from __future__ import annotations
