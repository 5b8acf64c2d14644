#!/usr/bin/env bash
# Quick start: install the runtime into .venv and run the daemon on a replayed EMG recording,
# publishing to an embedded MQTT broker, with the events shown live.
#   bash scripts/demo.sh [--emg-file FILE] [--speed N|max]
# Paths are taken relative to the directory you run it from. The install is skipped when
# pyproject.toml has not changed since the last one (the checkout is installed editable, so code
# changes need no reinstall).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=$REPO/.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.emotion-edge-demo-install
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/emotion-edge" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  echo "emotion-edge demo: installing into $VENV (once) ..." >&2
  log=$(mktemp)
  if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[demo]"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "$want" >"$STAMP"
fi
exec "$VENV/bin/emotion-edge" demo "$@"
