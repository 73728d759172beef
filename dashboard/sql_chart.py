"""An automatic Altair chart for an ad-hoc SQL result, when its shape suits one.

- **step × value**: a numeric ``step`` (or ``*_step``) column and another numeric column ->
  a line per series (the text columns with few distinct values, joined), e.g. failure rate per
  checkpoint and category.
- **category × count**: one text column with at most :data:`MAX_BARS` distinct values and a
  numeric column -> bars, largest first.

The value column is the first numeric one whose name says rate/gap/lag/mean/score, else the
first numeric one. Anything else (one row, wide text, no numbers) gets no chart.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

MAX_SERIES = 20
MAX_BARS = 50
MAX_ROWS = 5000
_PREFERRED = ("rate", "gap", "lag", "mean", "score", "reward", "n_flagged", "n")


def _numeric(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]


def _texts(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_object_dtype(df[c])
            or pd.api.types.is_string_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]


def _value(columns: list[str]) -> str | None:
    for word in _PREFERRED:
        for c in columns:
            if word in c.lower().split("_") or c.lower().endswith(word):
                return c
    return columns[0] if columns else None


def auto_chart(df: pd.DataFrame) -> tuple[alt.Chart | None, str]:
    """(chart or None, a caption saying what is plotted or why nothing is)."""
    if len(df.columns) != len(set(df.columns)):
        return None, "No chart: the result has duplicate column names."
    if len(df) < 2 or len(df) > MAX_ROWS:
        return None, f"No chart: charts are drawn for 2 to {MAX_ROWS:,} rows."
    numeric = _numeric(df)
    texts = [c for c in _texts(df) if 1 < df[c].nunique(dropna=False) <= MAX_SERIES]
    steps = [c for c in numeric if c.lower() == "step" or c.lower().endswith("_step")]
    if steps:
        x = steps[0]
        y = _value([c for c in numeric if c != x])
        if y is not None:
            data = df[[x, y, *texts]].copy()
            series = None
            if texts:
                data["series"] = data[texts].astype(str).agg(" / ".join, axis=1)
                if data["series"].nunique() <= MAX_SERIES:
                    series = "series"
            encode = {"x": alt.X(f"{x}:Q", title=x), "y": alt.Y(f"{y}:Q", title=y),
                      "tooltip": [c for c in data.columns]}
            if series:
                encode["color"] = alt.Color("series:N", title=" / ".join(texts))
            chart = alt.Chart(data).mark_line(point=True).encode(**encode).properties(height=320)
            return chart, f"{y} by {x}" + (f", one line per {' / '.join(texts)}" if series else "")
    labels = [c for c in _texts(df) if 1 < df[c].nunique() <= MAX_BARS]
    if labels and numeric:
        x, y = labels[0], _value(numeric)
        data = df[[x, y]].copy()
        data[x] = data[x].astype(str)
        data = data.groupby(x, as_index=False)[y].sum()
        chart = (alt.Chart(data).mark_bar()
                 .encode(x=alt.X(f"{x}:N", sort="-y", title=x), y=alt.Y(f"{y}:Q", title=y),
                         tooltip=[x, y])
                 .properties(height=320))
        return chart, f"{y} by {x}"
    return None, ("No chart: a chart is drawn for a step column with a numeric value, or a text "
                  "column with a numeric value.")
