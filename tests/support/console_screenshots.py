"""Screenshots of the Kombo console's views for the docs, taken from a live api-server over the seeded example
state (`tests/support/console.py`) by headless Chromium, logged in through Airflow's login form as a viewer
(candidate data hidden). One PNG per view: overview (inside the Airflow UI), funnel and trends, dead letters and
quarantine, order lookup, webhook log, run history, erasures.

    .venv/bin/python -m tests.support.console_screenshots --out docs/images
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kombo_sync.state.store import StateStore
from tests.support.browser import HeadlessChromium, chromium_path
from tests.support.console import seed_console_state
from tests.support.webhooks import PROJECT_ROOT, LiveAirflow

# File name: (path, viewport height); the funnel's charts need a taller window.
VIEWS = {
    "console-overview": ("/plugin/kombo", None),
    "console-funnel": ("/kombo-console/funnel?period=7d", 1100),
    "console-dead-letters": ("/kombo-console/dead-letters", None),
    "console-order-lookup": ("/kombo-console/orders?q=ord-invited-1", None),
    "console-webhook-log": ("/kombo-console/webhooks", None),
    "console-runs": ("/kombo-console/runs", None),
    "console-erasures": ("/kombo-console/erasures", None),
}
# A page is ready when its tables' scripts ran; the Airflow UI, when its labels are translated and the embedded
# console is ready (on a busy machine that takes far longer than the load event).
CONSOLE_READY = "document.querySelectorAll('table[data-sortable]:not([data-ready=true])').length === 0"
UI_READY = (
    "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument;"
    " return !!d && !!d.querySelector('#overview[data-ready=true]')"
    " && !document.body.innerText.includes('nav.'); })()"
)


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
    try:
        with LiveAirflow(home / "airflow", env=env) as live, HeadlessChromium(binary, timeout=90) as browser:
            browser.login(live.url, "viewer", "viewer", "/kombo-console/")
            for name, (path, height) in VIEWS.items():
                browser.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=args.width,
                    height=height or args.height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                browser.open(
                    live.url + path, ready=UI_READY if path.startswith("/plugin/") else CONSOLE_READY
                )
                time.sleep(1)  # fonts and the last paint
                print(browser.screenshot(args.out / f"{name}.png"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
