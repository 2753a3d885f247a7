"""The console's table bodies rendered in Python: a page of 1,000 rows x 27 columns through Jinja macros took
800 ms (measured by bench/console.py); the same HTML built here takes a few tens of milliseconds. The markup is
exactly what the templates' macros made (`_macros.html` keeps the table shell); every value is escaped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Number
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from kombo_sync.console.app import cell_text, safe_url

WRAPPED = frozenset({"message", "reason", "last_error", "answer", "problems"})
LOG_URL_KEYS = frozenset({"log_url", "last_error_log_url"})
# Overview counts shown in red when not zero.
BAD_WHEN_SET = frozenset({"dead_letters", "quarantined"})


def _q(value: Any) -> str:
    return quote(str(value), safe="")


def cell_html(key: str, row: Mapping[str, Any], linkable: bool = False) -> str:
    """A cell's content: Kombo log links, order links, integration links, short payload hashes, else text."""
    value = row.get(key)
    if key in LOG_URL_KEYS:
        url = safe_url(value)
        if url:
            return f'<a href="{escape(url)}" target="_blank" rel="noopener noreferrer">Kombo log</a>'
    elif key == "order_id" and value:
        return f'<a href="orders?q={escape(_q(value))}">{escape(value)}</a>'
    elif key == "integration_id" and value and linkable:
        return f'<a href="dead-letters?integration_id={escape(_q(value))}">{escape(value)}</a>'
    elif key == "payload_hash" and value:
        return f'<span title="{escape(value)}">{escape(str(value)[:10])}</span>'
    return str(escape(cell_text(value)))


def table_rows(
    columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]], linkable: bool = False
) -> Markup:
    """The `<tr>`s of a plain table (`_macros.simple_table`)."""
    keys = [key for key, _label in columns]
    out = []
    for row in rows:
        cells = []
        for key in keys:
            if key in WRAPPED:
                opening = '<td class="wrap">'
            elif isinstance(row.get(key), Number):
                opening = '<td class="num">'
            else:
                opening = "<td>"
            cells.append(f"{opening}{cell_html(key, row, linkable)}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>\n")
    return Markup("".join(out))


def _overview_cell(key: str) -> Callable[[Mapping[str, Any]], str]:
    """How one overview column renders a row's value (chosen once per column, not per cell)."""
    if key == "health":

        def health(row: Mapping[str, Any]) -> str:
            bad = row.get("health") == "unhealthy"
            text = escape(cell_text(row.get("health")))
            return (
                f'<td data-sort="0" class="bad">{text}</td>'
                if bad
                else f'<td data-sort="1" class="ok">{text}</td>'
            )

        return health
    if key == "integration_id":
        return lambda row: (
            f'<td><a href="dead-letters?integration_id={escape(_q(row.get(key)))}">'
            f"{escape(cell_text(row.get(key)))}</a></td>"
        )
    if key in ("problems", "last_error"):
        return lambda row: f'<td class="wrap">{escape(cell_text(row.get(key)))}</td>'
    flagged = key in BAD_WHEN_SET or key.endswith("_failed")

    def other(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if isinstance(value, Number) and not isinstance(value, bool):
            return (
                f'<td class="num bad">{value}</td>' if flagged and value else f'<td class="num">{value}</td>'
            )
        return f"<td>{cell_html(key, row)}</td>"

    return other


def overview_rows(columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]) -> Markup:
    """The overview's `<tr>`s: unhealthy rows marked, health sortable, counts right-aligned, problems in red."""
    cells = [_overview_cell(key) for key, _label in columns]
    out = []
    for row in rows:
        marker = ' class="unhealthy"' if row.get("health") == "unhealthy" else ""
        body = "".join([cell(row) for cell in cells])
        out.append(
            f'<tr{marker} data-integration="{escape(cell_text(row.get("integration_id")))}">{body}</tr>\n'
        )
    return Markup("".join(out))


def selectable_rows(
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Mapping[str, Any]],
    *,
    field: str,
    id_key: str,
    label: str,
    wrapped: str,
) -> Markup:
    """The `<tr>`s of a table whose rows can be selected for an action (dead letters, quarantined rows): a
    checkbox named `field` with the row's `id_key`, then the cells; a quarantined row's key links to its order."""
    keys = [key for key, _label in columns]
    out = []
    for row in rows:
        ident = escape(cell_text(row.get(id_key)))
        cells = [
            f'<td><input type="checkbox" name="{field}" value="{ident}" aria-label="{escape(label)}{ident}"></td>\n'
        ]
        for key in keys:
            opening = '<td class="wrap">' if key == wrapped else "<td>"
            if key == "source_key" and row.get("integration_id"):
                source = row.get("source_key")
                content = f'<a href="orders?q={escape(_q(source))}">{escape(cell_text(source))}</a>'
            else:
                content = cell_html(key, row)
            cells.append(f"{opening}{content}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>\n")
    return Markup("".join(out))
