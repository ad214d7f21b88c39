#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with the pinned requirements, then
#   bash scripts/run.sh demo [args]   - the main job on the embedded default (phantom + bundled demo model)
#   bash scripts/run.sh test [args]   - lint and the full test-suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${LUNGDDPM_VENV:-.venv}

if ! "$PY" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 12) else 1)'; then
  echo "error: LungDDPM needs Python 3.9-3.12; $("$PY" --version 2>&1) found (set PYTHON=/path/to/python3.X)" >&2
  exit 2
fi

stamp="$VENV/.lungddpm-installed"
if [ ! -x "$VENV/bin/python" ] || [ requirements-ci.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== setting up $VENV (pinned CPU requirements; first run takes a few minutes)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements-ci.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    exec "$VENV/bin/lungddpm" demo "$@"
    ;;
  test)
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
