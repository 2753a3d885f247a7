"""Alembic environment: runs on the connection handed over by `StateStore.migrate()`.

Offline mode (`--sql`) and a plain `sqlalchemy.url` option are supported for the Alembic CLI.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from kombo_sync.state.schema import VERSION_TABLE, UTCDateTime, metadata

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Versions stay free of package imports: the custom timestamp type is written as what it creates.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "render_item": _render_item,
    }


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need the sqlalchemy.url option")
    dialect_name = sa.engine.make_url(url).get_backend_name()
    context.configure(url=url, literal_binds=True, **_configure_options(dialect_name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **_configure_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection handed over and no sqlalchemy.url option set")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as own_connection:
        context.configure(connection=own_connection, **_configure_options(own_connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
