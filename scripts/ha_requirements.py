"""Print the pip requirements of every integration the test's Home Assistant loads (run in HA's venv).

HA always sets up its core and default integrations (frontend, backup, ...) besides the configured
ones; each may pull in others through its manifest's ``dependencies``. Listing them all lets
scripts/ha-venv.sh install them up front, so the test runs HA with ``--skip-pip``.
"""

from __future__ import annotations

import json
from pathlib import Path

from homeassistant import bootstrap, components

# What tests/test_home_assistant.py puts in configuration.yaml (or sets up through the API).
CONFIGURED = {"http", "mqtt", "automation", "config", "onboarding", "logger", "api", "websocket_api"}


def main() -> None:
    base = Path(components.__file__).parent
    todo = set(CONFIGURED)
    for name in (
        "CORE_INTEGRATIONS",
        "LOGGING_AND_HTTP_DEPS_INTEGRATIONS",
        "FRONTEND_INTEGRATIONS",
        "DEFAULT_INTEGRATIONS",
    ):
        todo |= set(getattr(bootstrap, name, ()))
    seen: set[str] = set()
    requirements: set[str] = set()
    while todo:
        domain = todo.pop()
        manifest_path = base / domain / "manifest.json"
        if domain in seen or not manifest_path.exists():
            continue
        seen.add(domain)
        manifest = json.loads(manifest_path.read_text())
        requirements.update(manifest.get("requirements", []))
        todo |= set(manifest.get("dependencies", []))
    print("\n".join(sorted(requirements)))


if __name__ == "__main__":
    main()
