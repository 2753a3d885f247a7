"""Test-wide environment, set before anything imports Airflow.

Airflow reads AIRFLOW_HOME when it is first imported, so it is fixed here, at the project root, for every test
run: a private Airflow home (SQLite metadata DB, the project's dags/ and plugins/) and a private KOMBO_SYNC_HOME.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_TMP = Path(tempfile.mkdtemp(prefix="kombo-test-"))

os.environ["AIRFLOW_HOME"] = str(_TMP / "airflow")
os.environ["KOMBO_SYNC_HOME"] = str(_TMP / "kombo")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
(_TMP / "airflow").mkdir(parents=True, exist_ok=True)
(_TMP / "kombo").mkdir(parents=True, exist_ok=True)
