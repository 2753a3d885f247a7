"""A local SMTP server that records every message it accepts: the e-mail channel's stand-in.

Run it with ``python -m sandbox.smtp --port 8025 --mailbox .local/mailbox``; each accepted message is written to
``<mailbox>/<n>-<message id>.eml`` and appended to ``<mailbox>/index.json`` (a JSON list: sequence number,
Message-ID, sender, recipients, subject, file, received_at). Tests use ``run_in_thread()``, which starts the
server on a free port and returns a ``SmtpSandbox`` handle; ``fail_next(n)`` makes the next ``n`` messages get a
temporary ``451`` failure, so retries can be tested without stopping the server. With ``--login`` and
``--password-env VAR`` (or ``credentials=`` in ``run_in_thread``) clients must authenticate (AUTH PLAIN / LOGIN
without TLS, loopback only); a wrong password is answered ``535``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

log = logging.getLogger("sandbox.smtp")

DEFAULT_PORT = 8025
INDEX_FILE = "index.json"


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value.strip("<>"))[:80] or "no-id"


class MailboxHandler:
    """aiosmtpd handler: writes each accepted message to the mailbox directory and indexes it."""

    def __init__(self, mailbox: Path) -> None:
        self.mailbox = Path(mailbox)
        self.mailbox.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._failures_left = 0
        self._index: list[dict[str, Any]] = self._read_index()

    def _read_index(self) -> list[dict[str, Any]]:
        path = self.mailbox / INDEX_FILE
        if not path.exists():
            return []
        loaded = json.loads(path.read_text() or "[]")
        return list(loaded) if isinstance(loaded, list) else []

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = max(0, count)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._index]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return "451 4.3.0 Temporary failure (sandbox knob)"
        raw: bytes = envelope.original_content or envelope.content
        parsed = message_from_bytes(raw, policy=policy.default)
        message_id = str(parsed.get("Message-ID", "") or "")
        with self._lock:
            sequence = len(self._index) + 1
            file_name = f"{sequence:06d}-{_safe_name(message_id)}.eml"
            (self.mailbox / file_name).write_bytes(raw)
            self._index.append(
                {
                    "sequence": sequence,
                    "message_id": message_id,
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": list(envelope.rcpt_tos),
                    "subject": str(parsed.get("Subject", "") or ""),
                    "file": file_name,
                    "received_at": datetime.now(UTC).isoformat(),
                }
            )
            tmp = self.mailbox / (INDEX_FILE + ".tmp")
            tmp.write_text(json.dumps(self._index, indent=1))
            tmp.replace(self.mailbox / INDEX_FILE)
        log.info("accepted message %s (%s recipient(s))", sequence, len(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@dataclass
class SmtpSandbox:
    """Handle on a running SMTP sandbox: where it listens, what it received, and its failure knob."""

    host: str
    port: int
    mailbox: Path
    handler: MailboxHandler
    _controller: Controller | None = field(default=None, repr=False)

    def messages(self) -> list[dict[str, Any]]:
        """Index entries of every accepted message, oldest first."""
        return self.handler.entries()

    def read(self, entry: dict[str, Any]) -> EmailMessage:
        raw = (self.mailbox / entry["file"]).read_bytes()
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def count_by_message_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.messages():
            counts[entry["message_id"]] = counts.get(entry["message_id"], 0) + 1
        return counts

    def fail_next(self, count: int) -> None:
        """The next ``count`` messages are answered ``451`` (temporary failure) and not recorded."""
        self.handler.fail_next(count)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """The one login the server accepts (the password is never logged)."""

    login: str
    password: str = field(repr=False)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.login.encode()
            and auth_data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False)


def run_in_thread(
    mailbox: Path | str,
    host: str = "127.0.0.1",
    port: int | None = None,
    credentials: Credentials | None = None,
) -> SmtpSandbox:
    """Start the SMTP sandbox in a background thread (on a free port unless given); call ``.stop()`` after.
    With ``credentials`` every client must log in with them."""
    handler = MailboxHandler(Path(mailbox))
    port = port or free_port(host)
    auth: dict[str, Any] = {}
    if credentials is not None:
        auth = {"authenticator": credentials, "auth_required": True, "auth_require_tls": False}
        # A loopback stand-in: aiosmtpd's warning about AUTH without TLS would repeat on every connection.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    controller = Controller(handler, hostname=host, port=port, ready_timeout=10.0, **auth)
    controller.start()
    return SmtpSandbox(host=host, port=port, mailbox=Path(mailbox), handler=handler, _controller=controller)


@contextmanager
def smtp_sandbox(
    mailbox: Path | str, host: str = "127.0.0.1", port: int | None = None
) -> Iterator[SmtpSandbox]:
    """Context manager (and pytest-fixture body) around ``run_in_thread``."""
    server = run_in_thread(mailbox, host, port)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.smtp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--mailbox", default=".local/mailbox", help="directory for .eml files and index.json")
    parser.add_argument("--login", default=None, help="require clients to log in with this user")
    parser.add_argument(
        "--password-env", default="SMTP_SANDBOX_PASSWORD", help="environment variable holding the password"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aiosmtpd logs the SMTP dialogue at INFO, recipients (candidates' e-mails) included: its warnings only.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)
    quiet = ("auth_require_tls == False", "login_data is deprecated")  # repeated on every connection
    mail_log.addFilter(lambda record: not any(text in record.getMessage() for text in quiet))
    credentials = None
    if args.login:
        password = os.environ.get(args.password_env)
        if not password:
            parser.error(f"--login needs the password in the environment variable {args.password_env}")
        credentials = Credentials(args.login, password)
    server = run_in_thread(args.mailbox, args.host, args.port, credentials)
    log.info("SMTP sandbox on %s:%s, mailbox %s", server.host, server.port, Path(args.mailbox).resolve())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
