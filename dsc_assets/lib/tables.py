"""Tables a person reads in the UI and in reports: markdown tables with numbers to three decimals, and previews of
a table's first rows with long texts clipped."""

from __future__ import annotations

import math

import dagster as dg
import pandas as pd


def clip(value: object, width: int = 120) -> str:
    """One line of at most ``width`` characters, safe inside a markdown table cell."""
    flat = " ".join(str(value).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cell(value) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}".replace("-0.000", "0.000")
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return header + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def preview(df: pd.DataFrame, columns: list[str], rows: int = 3) -> dg.MetadataValue:
    """The first ``rows`` rows of ``columns`` as a markdown table (texts clipped), for an asset's metadata."""
    shown = df[columns].head(rows)
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(clip(v, 160) for v in row) + " |\n" for row in shown.itertuples(index=False))
    return dg.MetadataValue.md(header + body if len(shown) else "_no rows_")
