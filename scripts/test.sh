#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#   bash scripts/test.sh [pytest args...]
# As root it installs mosquitto and its clients (real broker for the MQTT and deploy tests),
# systemd (systemd-analyze, systemd-tmpfiles), shellcheck, openssl, chromium and chromium-driver
# from apt. It creates .venv with the runtime, train, test, demo and web extras, and Home Assistant
# Core's venv (scripts/ha-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v shellcheck >/dev/null || need+=(shellcheck)
  command -v openssl >/dev/null || need+=(openssl)
  command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
  # The live page's tests drive a real headless browser.
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== apt: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== pip install -e .[train,test,demo,web]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[train,test,demo,web]"

# Home Assistant Core for tests/test_home_assistant.py: its own venv on Python 3.13, cached outside the
# repository (~/.cache/emotion-edge/ha-<version>); the first run downloads it (a few minutes).
if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
  echo "== Home Assistant venv"
  # A failure here must not stop the other tests: tests/test_home_assistant.py then fails (under CI=true).
  bash scripts/ha-venv.sh || echo "== Home Assistant venv could not be created (see above)"
fi

echo "== ruff + mypy"
.venv/bin/ruff check edge training tests bench
.venv/bin/ruff format --check edge training tests bench
.venv/bin/mypy edge training bench tests

echo "== pytest"
exec .venv/bin/python -m pytest -q "$@"
