#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with the pinned requirements, then
#   bash scripts/run.sh demo [args]   - the main job on the embedded default (phantom + bundled demo model)
#   bash scripts/run.sh test [args]   - lint and the full test-suite (what CI runs)
# `demo` installs only the engine's runtime pins (requirements-demo.txt); `test` adds the test stack
# (requirements-ci.txt, which includes the demo's file) to the same venv, also when the demo made it first.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${LUNGDDPM_VENV:-.venv}

cmd=${1:-}
shift || true
case "$cmd" in
  demo) req=requirements-demo.txt ;;
  test) req=requirements-ci.txt ;;
  *)
    echo "usage: bash scripts/run.sh demo|test [args...]" >&2
    exit 2
    ;;
esac

if ! "$PY" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 12) else 1)'; then
  echo "error: LungDDPM needs Python 3.9-3.12; $("$PY" --version 2>&1) found (set PYTHON=/path/to/python3.X)" >&2
  exit 2
fi

# The stamp lists the requirement files installed, one per line; it is rewritten after every install, so a line
# counts only while the stamp is newer than that file, requirements-demo.txt (which every file includes) and
# pyproject.toml. A venv made by `demo` lacks the requirements-ci.txt line, so `test` installs the test stack.
stamp="$VENV/.lungddpm-installed"
installed() {
  [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx "$1" "$stamp" \
    && [ ! "$1" -nt "$stamp" ] && [ ! requirements-demo.txt -nt "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]
}
if ! installed "$req"; then
  echo "== setting up $VENV from $req (pinned CPU requirements; the first run takes a few minutes)"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  "$VENV/bin/python" -m pip install --quiet -r "$req"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  if [ "$req" = requirements-ci.txt ]; then
    printf '%s\n' requirements-demo.txt requirements-ci.txt >"$stamp"
  else
    printf '%s\n' "$req" >"$stamp"
  fi
fi

case "$cmd" in
  demo)
    exec "$VENV/bin/lungddpm" demo "$@"
    ;;
  test)
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
esac
