"""Pictures a person would rather look at than read, embedded in asset metadata as markdown images."""

import base64
import io
from pathlib import Path

import dagster as dg
import pandas as pd


def _markdown_png(figure) -> dg.MetadataValue:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def reward_histogram(before: pd.Series, after: pd.Series, title: str) -> dg.MetadataValue:
    """Overlaid histograms of draft vs revision (or accepted) reward."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a buffer
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    values = pd.concat([before, after]).dropna()
    bins = 20 if values.nunique() > 1 else 1
    axis.hist(before.dropna(), bins=bins, alpha=0.6, label=f"draft (mean {before.mean():.2f})")
    axis.hist(after.dropna(), bins=bins, alpha=0.6, label=f"revision (mean {after.mean():.2f})")
    axis.set_xlabel("reward")
    axis.set_ylabel("rows")
    axis.set_title(title)
    axis.legend()
    try:
        return _markdown_png(figure)
    finally:
        plt.close(figure)


def line_plot(values: list[float], title: str, xlabel: str, ylabel: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    axis.plot(range(1, len(values) + 1), values)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    try:
        return _markdown_png(figure)
    finally:
        plt.close(figure)


def effects_plot(evaluation: pd.DataFrame, path: Path, title: str) -> None:
    """Each model's difference from ``base`` with its 95% interval: what the evaluation claims, at a glance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = evaluation[evaluation["model"] != "base"].iloc[::-1]  # the table's first row on top
    figure = Figure(figsize=(6, 0.5 * len(rows) + 1.2))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    difference = rows["difference_vs_base"].to_numpy()
    errors = [difference - rows["ci95_low"].to_numpy(), rows["ci95_high"].to_numpy() - difference]
    axis.errorbar(difference, range(len(rows)), xerr=errors, fmt="o", capsize=4)
    axis.axvline(0, color="grey", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), rows["model"].tolist())
    axis.set_xlabel("mean reward difference vs base (95% bootstrap CI)")
    axis.set_title(title)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
