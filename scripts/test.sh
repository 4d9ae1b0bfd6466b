#!/usr/bin/env bash
# Sets up the environment (first run only) and runs the whole test suite (Python + browser tests).
# Browser tests need Debian's chromium; it is installed here when missing and we are root (CI is).
source "$(dirname "$0")/env.sh"
cd "$MUSCLESAM_ROOT"
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[musclesam] installing Debian chromium for the browser tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[musclesam] warning: could not install chromium; browser tests will be skipped" >&2
fi
python -m pytest "$@"
rc=$?
if [ "$rc" = "5" ]; then
  echo "[musclesam] pytest collected no tests: treating as a failure (a suite that runs nothing proves nothing)" >&2
fi
# The whole suite (no test paths given) also runs the engine and learning tests on Slicer 5.6/5.8's
# Python 3.9 + numpy 1.26 (scripts/test_py39.sh; MUSCLESAM_SKIP_PY39=1 leaves it out).
_paths=0  # a test file or folder given (e.g. Testing/Python/test_x.py::test_y): only that is run
for _arg in "$@"; do case "$_arg" in -*) ;; *) if [ -e "${_arg%%::*}" ]; then _paths=1; fi ;; esac; done
if [ "$_paths" = "0" ] && [ "${MUSCLESAM_SKIP_PY39:-0}" != "1" ]; then
  echo "[musclesam] engine and learning tests on Python 3.9 + numpy 1.26 (Slicer 5.6/5.8)" >&2
  bash "$MUSCLESAM_ROOT/scripts/test_py39.sh" -q
  rc39=$?
  if [ "$rc" = "0" ]; then rc=$rc39; fi
fi
exit "$rc"
