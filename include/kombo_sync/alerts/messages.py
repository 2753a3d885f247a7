"""What an alert says: one `Alert` per kind and call, rendered the same for e-mail and chat.

An alert names ids (orders, integrations, quarantine rows, DAG runs), counts, Kombo error codes and Kombo
log_urls, never candidate data. `scrub` is the last guard: anything shaped like an e-mail address is blanked
before a message leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAILED_RUN = "failed_run"
DEAD_LETTER = "dead_letter"
ORDER_NOT_INVITED = "order_not_invited"
INTEGRATION_FAILING = "integration_failing"
QUARANTINED_ROW = "quarantined_row"
# The order alerts are checked and sent in; schema.ALERT_KINDS must hold the same names (a test pins it).
KINDS = (FAILED_RUN, DEAD_LETTER, ORDER_NOT_INVITED, INTEGRATION_FAILING, QUARANTINED_ROW)

_EMAIL = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+\.[A-Za-z]{2,}")
# Codes and reasons are printed only when they look like codes (Kombo's `error.code`, an exception name).
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with anything shaped like an e-mail address replaced."""
    return _EMAIL.sub(REDACTED, text)


def safe_code(value: Any) -> str | None:
    """`value` if it looks like an error code or a type name, else None (free text may quote candidate data)."""
    if value is None:
        return None
    text = str(value).strip()
    return text if _CODE.match(text) else None


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


@dataclass(frozen=True)
class Alert:
    """One message: a title line, detail lines, what to do, and the ids it is about."""

    kind: str
    title: str
    lines: tuple[str, ...] = ()
    action: str = ""
    ids: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def text(self) -> str:
        """The plain-text body (e-mail body; the chat message)."""
        parts = [self.title]
        if self.lines:
            parts.append("\n".join(self.lines))
        if self.action:
            parts.append(f"What to do: {self.action}")
        return scrub("\n\n".join(parts))

    def subject(self, prefix: str = "") -> str:
        return scrub(f"{prefix} {self.title}".strip())

    def details(self, limit: int) -> dict[str, Any]:
        """Structured fields for receivers that route on them (ids capped at `limit`)."""
        return {
            "kind": self.kind,
            "title": scrub(self.title),
            "counts": dict(self.counts),
            "ids": [scrub(value) for value in self.ids[:limit]],
        }


def bullet_lines(items: Iterable[str], total: int, limit: int) -> tuple[str, ...]:
    """`- item` lines, at most `limit`, then `... and N more` when `total` is larger."""
    lines = [f"- {item}" for item, _ in zip(items, range(limit), strict=False)]
    if total > len(lines):
        lines.append(f"- ... and {total - len(lines)} more")
    return tuple(lines)
