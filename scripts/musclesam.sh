#!/usr/bin/env bash
# Sets up the environment (first run only) and runs the musclesam CLI: scripts/musclesam.sh demo
source "$(dirname "$0")/env.sh"
exec python -m MuscleSAMLib.cli "$@"
