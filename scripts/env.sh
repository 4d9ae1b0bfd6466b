#!/usr/bin/env bash
# Source me: creates (once) and activates MuscleSAM's virtual environment.
# The venv lives outside the clone, keyed by a hash of requirements/lock.txt, so CI and users do not
# reinstall ~6 GB of torch on every run; a fresh machine builds it from the lock file. A venv that was
# interrupted mid-install has no .complete marker and is rebuilt.
# MUSCLESAM_LOCK picks another lock file (scripts/test_py39.sh: requirements/lock-py39.txt); a lock file may
# name its interpreter ("# python: 3.9", found on PATH or under pyenv) and its pip/setuptools
# ("# bootstrap: pip==X setuptools==Y").
set -euo pipefail
MUSCLESAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_lock="${MUSCLESAM_LOCK:-$MUSCLESAM_ROOT/requirements/lock.txt}"
_lock_python="$(sed -n 's/^# python: *//p' "$_lock" | head -n 1)"
_bootstrap="$(sed -n 's/^# bootstrap: *//p' "$_lock" | head -n 1)"
_bootstrap="${_bootstrap:-pip==26.3 setuptools==84.2.1}"
_hash="$(sha256sum "$_lock" | cut -c1-16)"
_venv="${MUSCLESAM_VENV_ROOT:-$HOME/.cache/musclesam}/venv-$_hash"
mkdir -p "$(dirname "$_venv")"
# One builder at a time: a second shell that starts while the venv is being built waits for it
# instead of deleting it half-way (the lock is released when the subshell ends).
exec 9>"$_venv.lock"
flock 9
if [ ! -f "$_venv/.complete" ]; then
  _py="${PYTHON:-}"
  if [ -z "$_py" ] && [ -n "$_lock_python" ]; then
    if "python$_lock_python" -c "" >/dev/null 2>&1; then
      _py="python$_lock_python"
    else
      _py="$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$_lock_python".*/bin/"python$_lock_python" 2>/dev/null | sort -V | tail -n 1)"
    fi
    if [ -z "$_py" ]; then
      echo "[musclesam] $_lock needs python$_lock_python: install it (e.g. pyenv install $_lock_python) or set PYTHON" >&2
      return 2 2>/dev/null || exit 2
    fi
  fi
  if [ -z "$_py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then _py=python3.11; else _py=python3; fi
  fi
  echo "[musclesam] creating virtual environment $_venv (first run only, a few minutes)" >&2
  rm -rf "$_venv"
  mkdir -p "$(dirname "$_venv")"
  "$_py" -m venv "$_venv"
  "$_venv/bin/python" -m pip install --quiet --upgrade $_bootstrap
  "$_venv/bin/python" -m pip install --quiet -r "$_lock"
  touch "$_venv/.complete"
fi
flock -u 9
exec 9>&-
# shellcheck disable=SC1091
source "$_venv/bin/activate"
export PYTHONPATH="$MUSCLESAM_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MUSCLESAM_ROOT
set +euo pipefail
