"""Data-quality suites: Great Expectations 1.x over each table, plus the degeneracy metrics small models need.

Small models echo the prompt, parrot the instruction, loop and stop mid-sentence. Each table gets derived metric
columns (length, repetition, echo of the prompt and of the text it reacts to, template echo) and a GE suite over
them; a failed suite is a failed blocking asset check, so nothing downstream trains on it.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dsc_assets.lib.tables import clip

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics from an offline tool


class QualityRules(BaseModel):
    """Thresholds of a table's suite; tasks override them under ``quality:`` in task.yaml."""

    model_config = ConfigDict(extra="forbid")

    min_rows: int = Field(1, ge=0, description="Fewer rows fail (an empty table is not a dataset).")
    min_chars: int = Field(2, ge=0)
    max_chars: int = Field(6000, ge=1)
    max_repetition: float = Field(0.5, ge=0, le=1, description="Share of repeated word 3-grams: loops score high.")
    max_echo: float = Field(0.85, ge=0, le=1, description="Similarity to the prompt / the text reacted to.")
    max_source_echo: float = Field(
        0.85,
        ge=0,
        le=1,
        description="Similarity above which a revision counts as a copy "
        "of the text it revises (and a chosen answer as a copy of the rejected one).",
    )
    max_unchanged_rate: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of revisions that may copy their draft: a "
        "failed proposal, the chain keeps the draft; more means the revision step is broken.",
    )
    max_template_echo: float = Field(
        0.6, ge=0, le=1, description="Share of the text copied verbatim from the instructions."
    )
    max_duplicate_rate: float = Field(0.2, ge=0, le=1)
    mostly: float = Field(0.9, gt=0, le=1, description="Share of rows that must pass each row-level expectation.")


_WORD = re.compile(r"\w+", re.UNICODE)


def repetition_ratio(text: str, n: int = 3) -> float:
    """1 − unique/total word n-grams: ~0 for prose, near 1 for a text that loops."""
    words = _WORD.findall(str(text).lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if len(grams) < 4 else 1.0 - len(set(grams)) / len(grams)


def echo_similarity(text: str, reference: str) -> float:
    """How much of ``text`` is copied from ``reference``: the longest common run of words over the text's length
    (1 for a verbatim echo; a revision that keeps a few phrases stays low)."""
    words, ref = _WORD.findall(str(text).lower()), _WORD.findall(str(reference).lower())
    if not words or not ref:
        return 0.0
    match = difflib.SequenceMatcher(None, words, ref, autojunk=False).find_longest_match(0, len(words), 0, len(ref))
    return match.size / len(words)


def template_echo(text: str, template_lines: list[str], run: int = 6) -> float:
    """Share of the text's words that sit in verbatim copies (runs of ≥ ``run`` words) of instruction lines.

    A model that parrots its instructions scores near 1; a critique that quotes the instruction's opening words and
    then says something of its own scores low (measured on the teacher's privacy critiques: the former rule, share
    of a line copied, flagged such a critique at 0.92)."""
    words = _WORD.findall(str(text).lower())
    if len(words) < run:
        return 0.0
    grams = set()
    for line in template_lines:
        line_words = _WORD.findall(line.lower())
        grams.update(tuple(line_words[i : i + run]) for i in range(len(line_words) - run + 1))
    covered = [False] * len(words)
    for i in range(len(words) - run + 1):
        if tuple(words[i : i + run]) in grams:
            covered[i : i + run] = [True] * run
    return sum(covered) / len(words)


def instruction_lines(*templates: str) -> list[str]:
    """The fixed text of templates (placeholders removed), sentence by sentence: what a parroting model would copy.

    A list after a colon ("...: names, addresses, phone numbers, e-mail addresses, ages, employers.") is left out:
    a critique that names those categories is doing its job, not copying the instruction (counting the list flagged
    4 of the teacher's 8 privacy critiques, mostly for naming the categories). The sentence before the colon stays.
    """
    lines = []
    for template in templates:
        for line in template.splitlines():
            fixed = re.sub(r"\{[a-z_]+\}", " ", line)
            for sentence in re.split(r"(?<=[.!?])\s+", fixed):
                head, colon, tail = sentence.partition(":")
                parts = [head + colon] + ([tail] if tail and tail.count(",") < 2 else [])
                lines += [part.strip() for part in parts if len(_WORD.findall(part)) >= 6]
    return lines


@dataclass
class Outcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int = 0
    examples: list[dict] = field(default_factory=list)


@dataclass
class QualityReport:
    name: str
    outcomes: list[Outcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def to_markdown(self) -> str:
        rows = ["| expectation | column | result | observed | bad rows |", "|---|---|---|---|---|"]
        for o in sorted(self.outcomes, key=lambda o: o.success):
            rows.append(
                f"| {o.expectation} | {o.column or '-'} | {'pass' if o.success else '**FAIL**'} | "
                f"{_fmt(o.observed)} | {o.unexpected_count} |"
            )
        examples = [
            f"- `{o.column}`: " + "; ".join(f"{e.get('prompt_id', '?')}: {clip(e.get('value'))}" for e in o.examples)
            for o in self.failed()
            if o.examples
        ]
        return "\n".join(rows) + ("\n\n**Examples of failing rows**\n\n" + "\n".join(examples) if examples else "")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else clip(value, 60)


_GX: dict[str, Any] = {}
_GX_LOCK = threading.Lock()


def _batch_definition():
    """One ephemeral GE context per process (its import and setup cost seconds; validation costs milliseconds)."""
    with _GX_LOCK:
        if "batch" not in _GX:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            asset = context.data_sources.add_pandas("dsc").add_dataframe_asset("table")
            _GX.update(gx=gx, batch=asset.add_batch_definition_whole_dataframe("whole table"))
        return _GX["gx"], _GX["batch"]


def _add_text_expectations(
    E,
    suite,
    work: pd.DataFrame,
    column: str,
    rules: QualityRules,
    echo_of: tuple[str, ...],
    copy_of: tuple[str, ...],
    template_lines: list[str] | None,
) -> None:
    """One text column's derived metrics (length, repetition, echo, template echo) and their expectations."""
    texts = work[column].fillna("").astype(str)
    work[f"{column}_chars"] = texts.str.strip().str.len()
    work[f"{column}_repetition"] = texts.map(repetition_ratio)
    suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(
        E.ExpectColumnValuesToBeBetween(
            column=f"{column}_chars", min_value=rules.min_chars, max_value=rules.max_chars, mostly=rules.mostly
        )
    )
    suite.add_expectation(
        E.ExpectColumnValuesToBeBetween(
            column=f"{column}_repetition", max_value=rules.max_repetition, mostly=rules.mostly
        )
    )
    suite.add_expectation(
        E.ExpectColumnProportionOfUniqueValuesToBeBetween(column=column, min_value=1.0 - rules.max_duplicate_rate)
    )
    references = [(r, rules.max_echo, rules.mostly) for r in echo_of]
    if rules.max_unchanged_rate < 1.0:  # 1.0: any share may be unchanged, nothing to expect
        references += [(r, rules.max_source_echo, 1.0 - rules.max_unchanged_rate) for r in copy_of]
    for reference, limit, mostly in references:
        metric = f"{column}_echo_of_{reference}"
        work[metric] = [echo_similarity(t, r) for t, r in zip(texts, work[reference].fillna("").astype(str))]
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(column=metric, max_value=limit, mostly=mostly))
    if template_lines:
        metric = f"{column}_template_echo"
        work[metric] = texts.map(lambda t: template_echo(t, template_lines))
        suite.add_expectation(
            E.ExpectColumnValuesToBeBetween(column=metric, max_value=rules.max_template_echo, mostly=rules.mostly)
        )


def _outcome(item, df: pd.DataFrame, work: pd.DataFrame, text_columns: tuple[str, ...]) -> Outcome:
    """One expectation's result, with up to three example rows (their prompt ids and the text that failed)."""
    config, details = item.expectation_config, item.result or {}
    column = config.kwargs.get("column")
    bad = (details.get("unexpected_index_list") or [])[:3]
    source = (
        column if column in df.columns else next((c for c in text_columns if column and column.startswith(c)), None)
    )
    examples = [
        {
            "prompt_id": work.at[i, "prompt_id"] if "prompt_id" in work else i,
            "value": work.at[i, source] if source else work.at[i, column],
        }
        for i in bad
    ]
    observed = details.get("observed_value")
    if observed is None and details.get("unexpected_count"):
        observed = f"{details['unexpected_count']} of {len(work)} rows"
    return Outcome(
        config.type, column, bool(item.success), observed, int(details.get("unexpected_count") or 0), examples
    )


def validate_table(
    df: pd.DataFrame,
    rules: QualityRules,
    name: str,
    text_columns: tuple[str, ...] = ("text",),
    echo_of: dict[str, tuple[str, ...]] | None = None,
    copy_of: dict[str, tuple[str, ...]] | None = None,
    template_lines: list[str] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    unique_columns: tuple[str, ...] = (),
    value_sets: dict[str, set] | None = None,
) -> QualityReport:
    """Run the GE suite for one table. ``echo_of`` maps a text column to the columns it must not copy (max_echo);
    ``copy_of`` to the text it revises (a copy above max_source_echo; at most max_unchanged_rate of the rows)."""
    outcomes: list[Outcome] = []
    if len(df) < rules.min_rows:
        outcomes.append(Outcome("expect_table_row_count_to_be_at_least", None, False, len(df)))
    if df.empty:
        return QualityReport(name, outcomes or [Outcome("expect_table_row_count_to_be_at_least", None, True, 0)])
    gx, batch_definition = _batch_definition()
    E = gx.expectations
    work = df.reset_index(drop=True).copy()
    suite = gx.ExpectationSuite(name=name)
    for column in text_columns:
        _add_text_expectations(
            E,
            suite,
            work,
            column,
            rules,
            (echo_of or {}).get(column, ()),
            (copy_of or {}).get(column, ()),
            template_lines,
        )
    for column, (low, high) in (ranges or {}).items():
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=column))
        if math.isinf(low) and math.isinf(high):
            continue
        suite.add_expectation(
            E.ExpectColumnValuesToBeBetween(
                column=column, min_value=None if math.isinf(low) else low, max_value=None if math.isinf(high) else high
            )
        )
    for column in unique_columns:
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column=column))
    for column, allowed in (value_sets or {}).items():
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(allowed)))
    result = batch_definition.get_batch(batch_parameters={"dataframe": work}).validate(
        suite, result_format={"result_format": "COMPLETE"}
    )
    outcomes += [_outcome(item, df, work, text_columns) for item in result.results]
    return QualityReport(name, outcomes)


def schema_outcome(df: pd.DataFrame, columns: tuple[str, ...]) -> Outcome:
    """The table holds the columns downstream code reads (a renamed column fails here, not in a later step)."""
    missing = [c for c in columns if c not in df.columns]
    return Outcome(
        "expect_table_columns_to_include",
        None,
        not missing,
        f"missing {', '.join(missing)}" if missing else f"{len(columns)} columns present",
    )


def count_outcome(value: int, low: int, name: str) -> Outcome:
    """A row count of part of a table (a split, a kind) is at least ``low``."""
    return Outcome(f"{name} at least {low}", None, value >= low, int(value))


def dataset_outcomes(df: pd.DataFrame) -> list[Outcome]:
    """The Hugging Face dataset folder a table points at (``dataset_path``) loads with ``datasets.load_from_disk``
    and holds the table's rows (same count, same prompt ids): what the trainer will read."""
    if df.empty or "dataset_path" not in df.columns:
        return []
    paths = sorted(set(df["dataset_path"].astype(str)))
    readable = Outcome("dataset folder readable by datasets.load_from_disk", "dataset_path", False, paths[0])
    if len(paths) != 1:
        readable.observed = f"{len(paths)} different folders for one task: {', '.join(paths[:3])}"
        return [readable]
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(paths[0])
    except Exception as error:  # noqa: BLE001  any failure to load is what this expectation reports
        readable.observed = f"{paths[0]}: {type(error).__name__}: {error}"
        return [readable]
    readable.success = True
    same = Outcome(
        "dataset rows match the table rows",
        "dataset_path",
        len(dataset) == len(df),
        f"{len(dataset)} in the folder, {len(df)} in the table",
    )
    if same.success and "prompt_id" in dataset.column_names and "prompt_id" in df.columns:
        differ = set(map(str, dataset["prompt_id"])) ^ set(df["prompt_id"].astype(str))
        same.success, same.observed = not differ, f"{len(differ)} prompt ids differ" if differ else same.observed
    return [readable, same]


def check_rate(value: float, low: float, high: float, name: str) -> Outcome:
    """A table-level rate (e.g. acceptance) within its band."""
    return Outcome(f"{name} between {low} and {high}", None, low <= value <= high, round(float(value), 4))


def check_result(report: QualityReport) -> dg.AssetCheckResult:
    failed = report.failed()
    return dg.AssetCheckResult(
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            "all expectations met"
            if report.success
            else f"{len(failed)} failed: "
            + "; ".join(f"{o.expectation}({o.column or ''}): observed {o.observed}" for o in failed)
        ),
        metadata={
            "expectations": dg.MetadataValue.int(len(report.outcomes)),
            "failed_expectations": dg.MetadataValue.int(len(failed)),
            "report": dg.MetadataValue.md(report.to_markdown()),
        },
    )
