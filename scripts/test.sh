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
exit "$rc"
