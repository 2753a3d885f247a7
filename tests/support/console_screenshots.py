"""Screenshots of the Kombo console's views for the docs, taken from a live api-server over the seeded example
state (`tests/support/console.py`) by headless Chromium, as a viewer (candidate data hidden).

    .venv/bin/python -m tests.support.console_screenshots --out docs/images
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from kombo_sync.state.store import StateStore
from tests.support.browser import HeadlessChromium, chromium_path
from tests.support.console import seed_console_state
from tests.support.webhooks import PROJECT_ROOT, LiveAirflow

VIEWS = {
    "console-overview": "/plugin/kombo",
    "console-dead-letters": "/kombo-console/dead-letters",
    "console-order-lookup": "/kombo-console/orders?q=ord-invited-1",
    "console-webhook-log": "/kombo-console/webhooks",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "images")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=640)
    args = parser.parse_args()
    binary = chromium_path()
    if binary is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="kombo-screenshots-"))
    state = home / "state.db"
    store = StateStore(f"sqlite:///{state}")
    seed_console_state(store, datetime.now(UTC))
    store.dispose()
    (home / "passwords.json").write_text(json.dumps({"viewer": "viewer"}))
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "sqlite", "host": str(state)}),
    }
    with LiveAirflow(home / "airflow", env=env) as live:
        token = httpx.post(
            f"{live.url}/auth/token", json={"username": "viewer", "password": "viewer"}, timeout=30.0
        ).json()["access_token"]
        with HeadlessChromium(binary) as browser:
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=args.width,
                height=args.height,
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.set_cookie("_token", token, live.url)
            for name, path in VIEWS.items():
                browser.open(live.url + path)
                time.sleep(3)  # the UI's own scripts and the embedded page settle
                shot = browser.call("Page.captureScreenshot", format="png")["data"]
                target = args.out / f"{name}.png"
                target.write_bytes(base64.b64decode(shot))
                print(target)


if __name__ == "__main__":
    main()
