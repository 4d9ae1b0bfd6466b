"""``python -m MuscleSAMLib.cli`` == ``musclesam``."""

import sys

from .main import main

sys.exit(main())
