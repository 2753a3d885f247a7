"""One-off setup steps of a deployment, run by the compose file's `airflow-init` (and by hand on other hosts).

- `ensure_database(url)`: create a PostgreSQL database (or a SQLite file's folder) when it does not exist, so the
  state store can live in its own database on the same server as Airflow's metadata.
- `write_passwords()`: the simple auth manager's password file, from `AIRFLOW_ADMIN_PASSWORD` (never logged).
- `fix_ownership()`: hand fresh named volumes to `AIRFLOW_UID` when running as root (as Airflow's own init does).
- `init_env()`: `.env` from `.env.example` with every `generate-me` placeholder replaced by a fresh secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kombo_sync.connections import normalize_url

log = logging.getLogger(__name__)

GENERATE_PLACEHOLDER = "generate-me"
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$")


def ensure_database(url: str, *, maintenance_db: str = "postgres") -> bool:
    """Create the database `url` names if it is missing; True when it was created. SQLite: the folder only."""
    parsed = make_url(normalize_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return False
    if backend != "postgresql":
        raise ValueError(f"cannot create a {backend} database; create it by hand")
    name = parsed.database or ""
    if not DATABASE_NAME.match(name):
        raise ValueError(f"refusing to create a database named {name!r}")
    engine = sa.create_engine(
        parsed.set(database=maintenance_db), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists:
                log.info("database %s already exists on %s", name, parsed.host)
                return False
            try:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except sa.exc.ProgrammingError as exc:
                # Two init containers racing: the other one created it first.
                if "already exists" not in str(exc):
                    raise
                return False
            log.info("created database %s on %s", name, parsed.host)
            return True
    finally:
        engine.dispose()


def ensure_state_database() -> str:
    """Create the state store's database (connection `kombo_state`) if missing; returns its masked URL."""
    from kombo_sync.settings import load_settings
    from kombo_sync.state.store import mask_url, resolve_state_url

    url = resolve_state_url(load_settings().state_conn_id)
    ensure_database(url)
    return mask_url(url)


def admin_user() -> str:
    """The first user of `[core] simple_auth_manager_users` (`admin:admin` by default)."""
    users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    return users.split(",")[0].split(":")[0].strip() or "admin"


def write_passwords(
    path: str | Path | None = None, *, user: str | None = None, password: str | None = None
) -> Path:
    """Set `user`'s password in the simple auth manager's password file (other users are kept)."""
    path = Path(path or os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    password = password if password is not None else os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    if not password:
        raise ValueError("AIRFLOW_ADMIN_PASSWORD is empty")
    user = user or admin_user()
    path.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, str] = {}
    if path.exists():
        try:
            text = path.read_bytes().decode("utf-8")
            current = json.loads(text) if text.strip() else {}
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            current = None  # type: ignore[assignment]
        if not isinstance(current, dict):
            raise ValueError(f"{path} must hold a JSON object of user: password; fix or remove it")
    current[user] = password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(current) + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode only applies to a new file
    log.info("password of Airflow user %s written to %s", user, path)
    return path


def fix_ownership(paths: Iterable[str | Path], uid: int | None = None) -> int:
    """When root: `chown -R uid:0` the paths (fresh named volumes); returns how many entries changed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return 0
    uid = int(os.environ.get("AIRFLOW_UID", "50000")) if uid is None else uid
    changed = 0
    for root in paths:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for entry in [root, *root.rglob("*")]:
            if entry.lstat().st_uid != uid:
                os.lchown(entry, uid, 0)
                changed += 1
    return changed


def _new_secret(key: str) -> str:
    if key == "AIRFLOW_FERNET_KEY":
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    if key == "POSTGRES_PASSWORD":
        return secrets.token_hex(16)  # lands in URLs: hex needs no escaping
    return secrets.token_urlsafe(32)


def init_env(example: str | Path, target: str | Path, *, force: bool = False) -> list[str]:
    """Write `target` from `example`, replacing each `KEY=generate-me` by a fresh secret; returns the keys."""
    target = Path(target)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it")
    generated: list[str] = []
    lines = []
    try:
        text = Path(example).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{example} is not UTF-8 text (byte {exc.start})") from None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip() == GENERATE_PLACEHOLDER:
            lines.append(f"{key}={_new_secret(key.strip())}")
            generated.append(key.strip())
        else:
            lines.append(line)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(target, 0o600)
    return generated
