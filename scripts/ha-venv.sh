#!/usr/bin/env bash
# Home Assistant Core for tests/test_home_assistant.py, in its own venv outside the repository.
#   bash scripts/ha-venv.sh        -> prints the venv's path; creates it first if it is missing
# HA 2025.4.4 is the newest release that installs on Python 3.13.0 (pyenv's, `pyenv root`/versions/3.13.0;
# HA_PYTHON overrides). The venv is cached in ~/.cache/emotion-edge/ha-<version> (EMOTION_EDGE_HA_VENV
# overrides), so only the first run downloads it. The requirements of every integration the test's HA
# loads are installed up front: the test runs HA with --skip-pip, so it never installs anything itself.
set -euo pipefail
HA_VERSION=2025.4.4
HA_VENV=${EMOTION_EDGE_HA_VENV:-$HOME/.cache/emotion-edge/ha-$HA_VERSION}

if [ -x "$HA_VENV/bin/hass" ] && [ -f "$HA_VENV/.complete" ]; then
  echo "$HA_VENV"
  exit 0
fi
PY=${HA_PYTHON:-}
if [ -z "$PY" ]; then
  # pyenv may be installed without being on a non-interactive shell's PATH: its default root then.
  PY="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/3.13.0/bin/python"
fi
[ -x "$PY" ] || { echo "ha-venv: no Python 3.13 at $PY" >&2; exit 69; }

echo "== Home Assistant $HA_VERSION: creating $HA_VENV" >&2
rm -rf "$HA_VENV"
mkdir -p "$(dirname "$HA_VENV")"
"$PY" -m venv "$HA_VENV"
pip=("$HA_VENV/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip >&2
# HA's own pins (package_constraints.txt, inside its wheel): without them pip backtracks for an hour
# through sdists of loosely bounded dependencies (habluetooth, bluetooth-data-tools...).
wheels="$HA_VENV/wheels"
"${pip[@]}" download -q --no-deps "homeassistant==$HA_VERSION" -d "$wheels" >&2
constraints="$HA_VENV/package_constraints.txt"
"$HA_VENV/bin/python" - "$wheels"/homeassistant-"$HA_VERSION"-*.whl "$constraints" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    open(sys.argv[2], "wb").write(whl.read("homeassistant/package_constraints.txt"))
PY
"${pip[@]}" install -q -c "$constraints" "$wheels"/homeassistant-"$HA_VERSION"-*.whl >&2
reqs="$HA_VENV/integration-requirements.txt"
"$HA_VENV/bin/python" "$(dirname "$0")/ha_requirements.py" >"$reqs"
"${pip[@]}" install -q -c "$constraints" -r "$reqs" >&2
touch "$HA_VENV/.complete"
echo "$HA_VENV"
