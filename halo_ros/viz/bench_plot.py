"""A benchmark's rows as a PNG: one horizontal bar chart per numeric column, rows as bars.

Benchmarks mix units across columns (ms, Hz, counts), so each column gets its own panel and
axis rather than one shared scale; the column name (which carries the unit, `p99_ms`) titles it.
"""

import io
import math
from collections.abc import Sequence
from pathlib import Path

MAX_PANELS = 12  # beyond this a page of bars stops being readable; the JSON has everything


def plot_rows(title: str, rows: Sequence[dict], path) -> Path:
    """Draw `rows` (a benchmark's table) into the PNG at `path`; ValueError if nothing numeric."""
    from matplotlib.figure import Figure

    from halo_ros.viz.html import write_atomic

    rows = list(rows)
    columns = numeric_columns(rows)
    if not columns:
        raise ValueError(f'{title}: no numeric column to plot in {len(rows)} row(s)')
    names = [row_label(row, k) for k, row in enumerate(rows)]
    labels, key = names, _distinguishing_column(rows, names, columns)
    if key is not None:  # e.g. seam-eval: a mode per delay, the delay says which row is which
        labels = [
            f'{n} {key}={_number(row.get(key)) or 0:g}' for n, row in zip(names, rows, strict=True)
        ]
        columns = [c for c in columns if c != key]
    shown = columns[:MAX_PANELS]
    palette = {n: f'C{k % 10}' for k, n in enumerate(dict.fromkeys(names))}  # one colour per name
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(
        figsize=(4.6 * ncols, 0.6 + (0.28 * len(rows) + 0.9) * nrows), layout='constrained'
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, column in zip(axes.flat, shown, strict=False):
        values = [_number(row.get(column)) for row in rows]
        y = range(len(rows))
        ax.barh(y, [0.0 if v is None else v for v in values], color=[palette[n] for n in names])
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()  # first row on top, as in the printed table
        ax.set_title(column, fontsize=9)
        ax.tick_params(axis='x', labelsize=7)
        ax.grid(axis='x', alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    more = f' (first {MAX_PANELS} of {len(columns)} columns)' if len(columns) > MAX_PANELS else ''
    fig.suptitle(title + more, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    return write_atomic(Path(path), buffer.getvalue())


def numeric_columns(rows: Sequence[dict]) -> list[str]:
    """Columns holding a finite number in at least one row, in first-seen order."""
    seen: dict[str, bool] = {}
    for row in rows:
        for key, value in row.items():
            seen[key] = seen.get(key, False) or _number(value) is not None
    return [key for key, numeric in seen.items() if numeric]


def _distinguishing_column(rows, names, columns) -> str | None:
    """The first numeric column that tells rows with the same name apart, if names repeat."""
    if len(set(names)) == len(names):
        return None
    for column in columns:
        if len({(n, _number(r.get(column))) for n, r in zip(names, rows, strict=True)}) == len(
            rows
        ):
            return column
    return None


def row_label(row: dict, index: int) -> str:
    """The row's text cells joined (its name), else its index."""
    text = [str(v) for v in row.values() if isinstance(v, str) and v]
    label = ' '.join(text) or f'row {index}'
    return label if len(label) <= 40 else label[:38] + '..'


def rows_from_json(document) -> list[dict]:
    """Rows from a benchmark's JSON: its `rows` (the shared report), the first list of row dicts
    (e.g. `topics`), or else one row per section of numbers (`{section: {name: number}}`)."""
    if isinstance(document, dict) and _is_rows(document.get('rows')):
        return document['rows']
    if isinstance(document, dict):
        for value in document.values():
            if _is_rows(value):
                return value
    rows = []
    for section, values in document.items() if isinstance(document, dict) else ():
        if not isinstance(values, dict):
            continue
        numbers = {k: v for k, v in values.items() if _number(v) is not None}
        if numbers:
            rows.append({'section': section, **numbers})
        for name, sub in values.items():  # {section: {arm: {metric: number}}}
            if isinstance(sub, dict) and any(_number(v) is not None for v in sub.values()):
                rows.append({'section': f'{section} {name}', **sub})
    return rows


def _is_rows(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
