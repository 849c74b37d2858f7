"""``write_html_report``: one self-contained HTML page of figures and facts."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cellvi.plotting._figures import figure_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.generated { color: #777; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.2em 0.9em 0.2em 0; vertical-align: top; }
th { color: #555; font-weight: 600; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
.note { color: #8a5a00; }
"""


def write_html_report(
    path: str | Path,
    title: str,
    facts: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    figures: Mapping[str, Figure | bytes] | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
    notes: Iterable[str] = (),
) -> Path:
    """Write a single HTML file: a title, a table of facts, figures (PNGs inside the page).

    The page needs nothing else to be read: no script, no stylesheet or image beside it, so
    it can be mailed or archived as one file. All text is escaped.

    Parameters
    ----------
    path
        The HTML file to write.
    title
        The page's title.
    facts
        ``name -> value`` pairs shown as a two-column table.
    figures
        ``heading -> figure`` (a matplotlib ``Figure`` or PNG bytes), each under its heading.
    tables
        ``heading -> DataFrame``, each under its heading.
    notes
        Lines shown under the title (e.g. what could not be drawn and why).

    Returns
    -------
    The path written.
    """
    path = Path(path)
    facts = list(facts.items()) if isinstance(facts, Mapping) else list(facts)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_text(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="generated">Written {stamp}</p>',
    ]
    parts += [f'<p class="note">{_text(note)}</p>' for note in notes]
    if facts:
        rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in facts)
        parts.append(f"<table>{rows}</table>")
    for heading, figure in (figures or {}).items():
        png = figure if isinstance(figure, bytes) else figure_png(figure)
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{_text(heading)}</h2>")
        parts.append(f'<img alt="{_text(heading)}" src="data:image/png;base64,{encoded}">')
    for heading, table in (tables or {}).items():
        parts.append(f"<h2>{_text(heading)}</h2>")
        parts.append(_html_table(table))
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _text(value: Any) -> str:
    return html.escape(str(value))


def _html_table(table: pd.DataFrame) -> str:
    header = "".join(f"<th>{_text(c)}</th>" for c in [table.index.name or "", *table.columns])
    rows = []
    for index, row in table.iterrows():
        cells = [f"<th>{_text(index)}</th>"]
        for value in row:
            if isinstance(value, float):
                cells.append(f'<td class="number">{"" if pd.isna(value) else f"{value:.4g}"}</td>')
            else:
                cells.append(f"<td>{_text(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"
