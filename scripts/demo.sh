#!/usr/bin/env bash
# Quick start: install the runtime into .venv and run the daemon on a replayed EMG recording,
# publishing to an embedded MQTT broker, with the events shown live.
#   bash scripts/demo.sh [--emg-file FILE] [--speed N|max]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[demo]"
exec .venv/bin/emotion-edge demo "$@"
