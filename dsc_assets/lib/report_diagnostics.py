"""The report's "What each method learned from": for every evaluated method, the data it trained on (rows, the
signal in them), how far its loss moved, its answers' length against base, and, where it did not beat base, which of
those numbers are out of the range where a method moved the student here. The reasons are read off the data by
stated thresholds, never written by hand."""

from __future__ import annotations

import math

import duckdb
import pandas as pd

from dsc_assets.lib.methods import CHECKPOINTED
from dsc_assets.lib.tables import markdown_table
from resources.stores import read_table

FEW_ROWS = 30  # the study's sentiment methods moved the student from ~55-90 training rows
WEAK_MARGIN = 0.05  # a mean reward margin this small (in the reward's own units) is little to learn from
FLAT_LOSS = 0.05  # the last loss within 5% of the first: the training barely fitted its data
SHORTER = 0.8  # answers under 80% of base's length: a reward can be won by writing less
WEAK_AGREEMENT = 0.6  # ALMoST's reward model agreeing with the external reward on under 60% of pairs


def _checkpoint(con, method: str, task: str) -> dict:
    df = read_table(con, f"{method}_checkpoint", task)
    if df is None or df.empty or not (df["status"] == "trained").any():
        return {}
    trained = df[df["status"] == "trained"]
    return {
        "rows": int(trained["train_rows"].iloc[0]),
        "first": float(trained["first_loss"].mean()),
        "last": float(trained["last_loss"].mean()),
    }


def _signal(con, method: str, task: str) -> tuple[str, str]:
    """(what the signal is, a reason when it is weak) for the method's training data."""
    if method in ("sft", "placebo"):
        accepted = read_table(con, "accepted_samples", task)
        if accepted is None or accepted.empty or "accepted" not in accepted.columns:
            return ("", "")
        kept = accepted[accepted["accepted"]]
        if method == "placebo":
            return (f"drafts only (mean draft reward {kept['draft_reward'].mean():+.3f})", "")
        after = "sample_reward" if "sample_reward" in kept.columns else "revision_reward"
        gain = float((kept[after] - kept["draft_reward"]).mean()) if len(kept) else float("nan")
        text = f"accepted {len(kept)} of {len(accepted)}; revision - draft reward {gain:+.3f}"
        return (text, "revisions barely better than drafts" if gain < WEAK_MARGIN else "")
    if method in ("dpo", "rdpo"):
        pairs = read_table(con, "preference_pairs", task)
        if pairs is None or pairs.empty or "margin" not in pairs.columns:
            return ("", "")
        margin = float(pairs["margin"].mean())
        text = f"{len(pairs)} pairs; chosen - rejected reward {margin:+.3f}"
        return (text, "small reward margin between chosen and rejected" if margin < WEAK_MARGIN else "")
    if method == "dlma":
        pairs = read_table(con, "dlma_pairs", task)
        if pairs is None or pairs.empty:
            return ("", "")
        return (f"{len(pairs)} pairs; self-reward margin {pairs['self_reward'].mean():+.3f}", "")
    if method == "almost_sft":
        agreement = read_table(con, "reward_model_agreement", task)
        if agreement is None or agreement.empty:
            return ("", "")
        value = float(agreement["agreement_with_external_reward"].iloc[0])
        weak = "its reward model disagrees with the external reward" if value < WEAK_AGREEMENT else ""
        return (f"reward model agrees with the external reward on {value:.0%} of pairs", weak)
    return ("", "")


def diagnostics_table(con: duckdb.DuckDBPyConnection, task: str, evaluation: pd.DataFrame) -> pd.DataFrame:
    rows = []
    by_model = evaluation.set_index("model")
    base_words = by_model["mean_answer_words"].get("base") if "mean_answer_words" in by_model.columns else None
    for method in CHECKPOINTED:
        if method not in by_model.index:
            continue
        trained, (signal, weak) = _checkpoint(con, method, task), _signal(con, method, task)
        reasons = [weak] if weak else []
        if trained and trained["rows"] < FEW_ROWS:
            reasons.append(f"few training rows ({trained['rows']})")
        loss = ""
        if trained and not math.isnan(trained["first"]):
            loss = f"{trained['first']:.3f} -> {trained['last']:.3f}"
            if trained["first"] and (trained["first"] - trained["last"]) / abs(trained["first"]) < FLAT_LOSS:
                reasons.append("loss barely moved")
        words = by_model["mean_answer_words"].get(method) if base_words else None
        if words is not None and base_words and words < SHORTER * base_words:
            reasons.append(f"answers {words / base_words:.0%} of base's length")
        row = by_model.loc[method]
        moved = row["ci95_low"] > 0
        rows.append(
            {
                "method": method,
                "training data": signal,
                "loss first -> last": loss,
                "difference vs base": f"{row['difference_vs_base']:+.3f} [{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]",
                "answer words (base)": f"{words:.0f} ({base_words:.0f})" if words is not None else "",
                "what the data says": ("moved the reward" + (f"; note: {'; '.join(reasons)}" if reasons else ""))
                if moved
                else ("; ".join(reasons) or "no threshold crossed: the data looks like a moving method's"),
            }
        )
    return pd.DataFrame(rows)


def diagnostics_lines(con: duckdb.DuckDBPyConnection, task: str, evaluation: pd.DataFrame) -> list[str]:
    table = diagnostics_table(con, task, evaluation)
    if table.empty:
        return []
    return [
        "## What each method learned from",
        "",
        f"Thresholds: under {FEW_ROWS} training rows, a mean reward margin under {WEAK_MARGIN}, the last loss within "
        f"{FLAT_LOSS:.0%} of the first, answers under {SHORTER:.0%} of base's length, a reward model agreeing with "
        f"the external reward on under {WEAK_AGREEMENT:.0%} of pairs (lib/report_diagnostics.py).",
        "",
        markdown_table(table),
    ]
