#!/usr/bin/env bash
# Sets up the environment (first run only) and runs the whole test suite.
# pytest's exit code 5 ("no tests collected") is an error here: a suite that runs nothing must fail.
source "$(dirname "$0")/env.sh"
cd "$MUSCLESAM_ROOT"
python -m pytest "$@"
