"""Alembic environment and versions of the state store (run them with `python -m kombo_sync.state migrate`).

No alembic.ini is needed: `alembic_config()` points Alembic at this folder and hands it an open connection.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection

from kombo_sync.state.schema import VERSION_TABLE

SCRIPT_LOCATION = Path(__file__).resolve().parent

__all__ = ["SCRIPT_LOCATION", "VERSION_TABLE", "alembic_config"]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package; `env.py` runs on `connection` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config
