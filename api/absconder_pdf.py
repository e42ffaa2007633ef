"""The absconder reporting template on paper: one A4 page per region and a national page, each
with the template's table and a chart of the month day by day (new absconders and traced ones
as bars, the outstanding balance as a line). The same page renders as PNG for the README
(`tagwatch report absconders-monthly --format png`).

Drawn with matplotlib's object API (``Figure``, no pyplot: no global state, so requests in
threads do not share a figure) on the Agg canvas, the PDF written by ``PdfPages``. Text from
the database (region names) is drawn with ``parse_math=False``: a ``$`` in a name is a dollar
sign, never a formula the renderer could fail on. PDFs carry no creation date: the same
template gives the same bytes.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tagwatch.alerts.absconder_template import ROWS, value

A4_LANDSCAPE = (11.69, 8.27)
# Where the chart sits on a page (figure fraction: left, bottom, width, height); the PDF test
# looks for ink there.
CHART_BOX = (0.6, 0.2, 0.37, 0.62)
TABLE_BOX = (0.02, 0.1, 0.52, 0.74)
COLOURS = {"new": "#d9480f", "traced": "#2b8a3e", "outstanding": "#1c3d8f"}
MAX_NATIONAL_COLUMNS = 5
# One rendering at a time: matplotlib's object API keeps no global figure, but its font and
# text caches are shared; PDFs are rare, and a queue of them is better than a race.
RENDERING = threading.Lock()  # regions shown beside the national column on its page


def shown(figure: Any) -> str:
    """A figure as the template prints it: thousands separated, at most three decimals."""
    if figure is None:
        return "–"
    if isinstance(figure, float):
        return f"{figure:,.3f}".rstrip("0").rstrip(".")
    return f"{figure:,}" if isinstance(figure, int) else str(figure)


def _month_name(label: str) -> str:
    year, number = (int(p) for p in label.split("-"))
    return date(year, number, 1).strftime("%B %Y")


def _printable(text: str) -> str:
    """Control characters (a name may hold any) have no glyph: shown as '?'."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)


def _title(column: Mapping[str, Any]) -> str:
    if column.get("region") is None:
        return "National"
    name, region = _printable(str(column["name"])), str(column["region"])
    return region if name in ("", region) else f"{name} ({region})"


def _short(column: Mapping[str, Any]) -> str:
    """A column's header beside others: the region's name, cut to fit."""
    if column.get("region") is None:
        return "National"
    name = _printable(str(column.get("name") or column["region"]))
    return name if len(name) <= 14 else name[:13] + "…"


def _chart(fig: Figure, column: Mapping[str, Any]) -> None:
    ax = fig.add_axes(CHART_BOX)
    daily = column.get("daily") or []
    days = list(range(1, len(daily) + 1))
    width = 0.4
    ax.bar(
        [d - width / 2 for d in days],
        [d["new"] for d in daily],
        width,
        color=COLOURS["new"],
        label="new",
    )
    ax.bar(
        [d + width / 2 for d in days],
        [d["traced"] for d in daily],
        width,
        color=COLOURS["traced"],
        label="traced",
    )
    ax.step(
        days,
        [d["outstanding"] for d in daily],
        where="mid",
        color=COLOURS["outstanding"],
        linewidth=2,
        label="outstanding (end of day)",
    )
    top = max([1, *(max(d["new"], d["traced"], d["outstanding"]) for d in daily)])
    ax.set_ylim(0, top * 1.15 + 0.5)
    ax.set_xlim(0.3, max(len(daily), 1) + 0.7)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("day of the month")
    ax.set_ylabel("cases")
    ax.set_title("New, traced and outstanding, day by day", fontsize=11)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _table(fig: Figure, columns: Sequence[Mapping[str, Any]]) -> None:
    ax = fig.add_axes(TABLE_BOX)
    ax.axis("off")
    cells = [[label, *(shown(value(c, key)) for c in columns)] for key, label in ROWS]
    table = ax.table(
        cellText=cells,
        colLabels=["", *(_title(c) if len(columns) == 1 else _short(c) for c in columns)],
        colWidths=[0.52, *([0.48 / len(columns)] * len(columns))],
        loc="upper left",
        cellLoc="right",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8.5 if len(columns) < 3 else 7)
    table.scale(1, 1.32)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        text = cell.get_text()
        text.set_parse_math(False)
        if col == 0:
            text.set_horizontalalignment("left")
            label = ROWS[row - 1][1] if row else ""
            if label.startswith("  "):
                text.set_color("#555555")
                cell.PAD = 0.08
        if row == 0:
            cell.set_facecolor("#eef1f6")
            text.set_fontweight("bold")


def page(template: Mapping[str, Any], column: Mapping[str, Any]) -> Figure:
    """One page: a region's column, or the national one (beside up to five regions)."""
    fig = Figure(figsize=A4_LANDSCAPE)
    when = f"{_month_name(str(template['month']))}, months in {template['timezone']}"
    if not template.get("complete", True):
        when += f" — figures so far (to {template['as_of']:%Y-%m-%d %H:%M} UTC)"
    fig.text(
        0.02,
        0.95,
        f"Absconders: {_title(column)}",
        fontsize=17,
        fontweight="bold",
        parse_math=False,
    )
    fig.text(0.02, 0.91, when, fontsize=10.5, color="#444444", parse_math=False)
    columns: list[Mapping[str, Any]] = [column]
    if column.get("region") is None:
        regions = template.get("regions") or []
        if 1 < len(regions) <= MAX_NATIONAL_COLUMNS:
            columns = [*regions, column]
        scope = column.get("scope", "")
        included = ", ".join(str(r) for r in column.get("regions_included") or []) or "none"
        fig.text(
            0.02,
            0.875,
            f"Roll-up of {scope}: {included}",
            fontsize=8.5,
            color="#444444",
            parse_math=False,
        )
    _table(fig, columns)
    _chart(fig, column)
    fig.text(
        0.02,
        0.03,
        "Outstanding: opened and not yet traced. Days at large: opened to traced, of the cases"
        " traced in the month. Days outstanding: of the closing balance, to the month's end.\n"
        "Rate: new absconders per 1,000 subjects monitored in the month. Definitions:"
        " docs/api.md, 'The absconder reporting template'. Generated by tagwatch.",
        fontsize=7.5,
        color="#555555",
    )
    return fig


def pages(template: Mapping[str, Any]) -> list[Figure]:
    return [page(template, c) for c in [*template["regions"], template["national"]]]


def render_pdf(template: Mapping[str, Any]) -> bytes:
    """A page per region, then the national page."""
    out = io.BytesIO()
    with RENDERING, PdfPages(out, metadata={"Creator": "tagwatch", "CreationDate": None}) as pdf:
        for fig in pages(template):
            pdf.savefig(fig)
    return out.getvalue()


def render_png(template: Mapping[str, Any], region: str | None = None, dpi: int = 72) -> bytes:
    """One page as PNG: a region's (``region``), or the national one."""
    columns = [c for c in template["regions"] if c["region"] == region] if region else []
    column = columns[0] if columns else template["national"]
    out = io.BytesIO()
    with RENDERING:
        page(template, column).savefig(out, format="png", dpi=dpi)
    return out.getvalue()
