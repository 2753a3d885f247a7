"""Charts drawn on the server as inline SVG (no script, no library, nothing from the internet): horizontal bars
for the funnel and column charts (grouped or stacked) for the trends. Every text is escaped; the SVG carries a
`<title>` per bar, so a hover shows the exact number, and the page keeps a table of the same numbers.
`funnel_charts` draws the funnel page's charts from a `queries.Funnel`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH = 720
# Colour-blind-safe palette (Okabe-Ito), one colour per series.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str = ""


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def funnel_bars(steps: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """One horizontal bar per step, its count and its share of the first step."""
    first = max(steps[0][1], 1) if steps else 1
    top = max((count for _label, count in steps), default=0) or 1
    row, label_width = 34, 130
    height = row * len(steps) + 10
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for index, (label, count) in enumerate(steps):
        y = 5 + index * row
        width = (WIDTH - label_width - 170) * count / top
        share = f"{100 * count / first:.0f}%" if index else ""
        parts.append(
            f"<g><title>{escape(label)}: {count:,}</title>"
            f'<text x="0" y="{y + 20}" class="label">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 4}" width="{width:.1f}" height="22" rx="2" '
            f'fill="{PALETTE[index % len(PALETTE)]}"/>'
            f'<text x="{label_width + width + 6:.1f}" y="{y + 20}" class="value">{count:,} {share}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    stacked: bool = False,
    unit: str = "",
    height: int = 220,
) -> Markup:
    """Columns per category (grouped, or stacked when `stacked`), a y axis with three ticks and a legend."""
    left, bottom, top_pad = 56, 38, 24
    plot_width, plot_height = WIDTH - left - 8, height - bottom - top_pad
    if stacked:
        top = max((sum(s.values[i] or 0 for s in series) for i in range(len(categories))), default=0)
    else:
        top = max((value or 0 for s in series for value in s.values), default=0)
    top = top or 1
    slot = plot_width / max(len(categories), 1)
    bar = slot * 0.8 / (1 if stacked else max(len(series), 1))
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for tick in (0, 0.5, 1):
        y = top_pad + plot_height * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{escape(_number(top * tick))}{escape(unit)}</text>"
        )
    every = max(1, len(categories) // 12)  # at most about 12 labels under the axis
    for index, category in enumerate(categories):
        x0 = left + index * slot + slot * 0.1
        base = 0.0
        for number, item in enumerate(series):
            value = float(item.values[index] or 0)
            h = plot_height * value / top
            color = item.color or PALETTE[number % len(PALETTE)]
            if stacked:
                y = top_pad + plot_height - h - plot_height * base / top
                x = x0
                base += value
            else:
                y = top_pad + plot_height - h
                x = x0 + number * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(category)} · {escape(item.name)}: {escape(_number(value))}{escape(unit)}</title>"
                "</rect>"
            )
        if index % every == 0:
            parts.append(
                f'<text x="{left + index * slot + slot / 2:.1f}" y="{height - bottom + 16}" class="tick" '
                f'text-anchor="middle">{escape(category)}</text>'
            )
    x = left
    for number, item in enumerate(series):
        color = item.color or PALETTE[number % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="4" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="13" class="legend">{escape(item.name)}</text>'
        )
        x += 24 + 7 * len(item.name)
    parts.append("</svg>")
    return Markup("".join(parts))


def _short_bucket(bucket: str) -> str:
    """An axis label: "05h" for an hour bucket ("YYYY-MM-DD HH"), "11-30" for a day ("YYYY-MM-DD")."""
    return f"{bucket[11:13]}h" if len(bucket) > 10 else bucket[5:]


def funnel_charts(found: Any, bin_labels: Sequence[str]) -> dict[str, Any]:
    """The funnel page's SVG charts (`console.charts`) from a `queries.Funnel`."""
    categories = [_short_bucket(str(row["bucket"])) for row in found.buckets]

    def values(key: str) -> list[float]:
        return [float(row[key] or 0) for row in found.buckets]

    totals = found.totals
    return {
        "funnel": funnel_bars(
            [
                ("Received", totals["received"]),
                ("Invited", totals["invited"]),
                ("Finished", totals["finished"]),
                ("Written back", totals["written_back"]),
            ],
            title="Received, invited, finished, written back",
        ),
        "volume": column_chart(
            categories,
            [
                Series(name, values(key))
                for key, name in (
                    ("received", "received"),
                    ("invited", "invited"),
                    ("finished", "finished"),
                    ("written_back", "written back"),
                )
            ],  # fmt: skip
            title="Orders and results per " + found.unit,
        ),
        "latency": column_chart(
            list(bin_labels), [Series("orders", found.invite_latency)], title="Invitation latency"
        ),
        "latency_trend": column_chart(
            categories,
            [Series("average invitation latency", [value / 60 for value in values("invite_latency_avg_s")])],
            title="Average invitation latency per " + found.unit,
            unit=" min",
            height=180,
        ),
        "lag": column_chart(
            list(bin_labels), [Series("results", found.writeback_lag, "#009E73")], title="Write-back lag"
        ),
        "lag_trend": column_chart(
            categories,
            [
                Series(
                    "average write-back lag",
                    [value / 60 for value in values("writeback_lag_avg_s")],
                    "#009E73",
                )
            ],
            title="Average write-back lag per " + found.unit,
            unit=" min",
            height=180,
        ),
        "webhooks": column_chart(
            categories,
            [
                Series("2xx", values("webhooks_2xx"), "#009E73"),
                Series("422 rejected", values("webhooks_422"), "#E69F00"),
                Series("other 4xx", values("webhooks_other_4xx"), "#CC79A7"),
                Series("5xx / none", values("webhooks_5xx"), "#D55E00"),
            ],
            title="Webhook answers by status per " + found.unit,
            stacked=True,
        ),
    }
