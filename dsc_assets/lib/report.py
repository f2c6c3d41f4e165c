"""Study reports: one markdown file and one effects plot per task, written from a finished run's warehouse tables so
a result can be committed beside the code and the profile that produced it (``dsc report``).

The warehouse holds one set of tables per task whatever profile wrote them last, so the report also checks that
its tables agree with each other and with the profile: a run of another profile, or one stopped halfway, leaves
tables from two runs side by side, and a report over them would mix two experiments.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd
import yaml

from dsc_assets.lib import ledger
from dsc_assets.lib.commit import git_commit
from dsc_assets.lib.family import CONTROLS, Family, holm_verdict
from dsc_assets.lib.methods import CHECKPOINT_TABLES
from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets.lib.plots import effects_plot
from dsc_assets.lib.previous_report import previous_evaluation, previous_report_section  # noqa: F401  (tests import it here)
from dsc_assets.lib.profiles import load_profile, profile_mapping
from dsc_assets.lib.report_diagnostics import diagnostics_lines
from dsc_assets.lib.report_settings import settings_lines
from dsc_assets.lib.stats import PER_PROMPT, SECOND, SPEARMAN, subset_table
from dsc_assets.lib.tables import cell, markdown_table
from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import load_task, load_task_spec
from dsc_assets.lib.verdicts import interval_verdict, second_reward_note, second_verdict
from resources.stores import read_table

CHECKPOINT_COLUMNS = ["method", "status", "train_rows", "steps", "first_loss", "last_loss", "seconds"]
EVALUATION_COLUMNS = [
    "model",
    "prompts",
    "samples_per_prompt",
    "mean_reward",
    "difference_vs_base",
    "ci95_low",
    "ci95_high",
    "win_rate_vs_base",
]


class ReportError(Exception):
    """A table the report needs is missing for the task: nothing is written for it."""


def _table(con: duckdb.DuckDBPyConnection, name: str, task: str) -> pd.DataFrame | None:
    """The task's rows of ``dsc.<name>``; None when the table does not exist (the asset never ran)."""
    return read_table(con, name, task)


def evaluated_split(prompts: pd.DataFrame) -> str:
    """The split the evaluation answered: raw_prompts holds train and that one (the profile's ``eval_split``)."""
    held_out = sorted(set(prompts["split"]) - {"train"})
    return held_out[0] if len(held_out) == 1 else "test"


def _data_sizes(con: duckdb.DuckDBPyConnection, task: str, prompts: pd.DataFrame) -> list[tuple[str, str]]:
    split = evaluated_split(prompts)
    rows = [
        ("train prompts used", str(int((prompts["split"] == "train").sum()))),
        (f"{split} prompts (evaluated)", str(int((prompts["split"] == split).sum()))),
    ]
    accepted = _table(con, "accepted_samples", task)
    if accepted is not None and "accepted" in accepted.columns:
        rows.append(("accepted samples", f"{int(accepted['accepted'].sum())} of {len(accepted)}"))
    pairs = _table(con, "dpo_dataset", task)
    if pairs is not None:
        rows.append(("DPO pairs", str(len(pairs))))
    scores = _table(con, "reward_scores", task)
    if scores is not None and {"kind", "step", "reward"} <= set(scores.columns):
        for (kind, step), reward in scores.groupby(["kind", "step"])["reward"].mean().items():
            rows.append((f"mean {kind} reward (step {step})", cell(float(reward))))
    return rows


def consistency_problems(con: duckdb.DuckDBPyConnection, task: str, profile_path: Path) -> list[str]:
    """Signs that the task's tables come from different runs, or from another profile than ``profile_path``."""
    prompts, evaluation = _table(con, "raw_prompts", task), _table(con, "evaluation", task)
    if prompts is None or evaluation is None:
        return []
    profile = load_profile(str(profile_path))
    split = evaluated_split(prompts)
    train, test = int((prompts["split"] == "train").sum()), int((prompts["split"] == split).sum())
    problems = []
    evaluated = evaluation.loc[evaluation["model"] == "base", "prompts"]
    if len(evaluated) and int(evaluated.iloc[0]) != test:
        problems.append(f"the evaluation used {int(evaluated.iloc[0])} {split} prompts, raw_prompts holds {test}")
    accepted = _table(con, "accepted_samples", task)
    if accepted is not None and len(accepted) and len(accepted) != train:
        problems.append(f"accepted_samples has {len(accepted)} chains for {train} train prompts")
    if profile.max_prompts_per_task is not None and train > profile.max_prompts_per_task:
        problems.append(f"{train} train prompts, the profile allows {profile.max_prompts_per_task}")
    if profile.max_eval_prompts_per_task is not None and test > profile.max_eval_prompts_per_task:
        problems.append(f"{test} {split} prompts, the profile allows {profile.max_eval_prompts_per_task}")
    if "samples_per_prompt" in evaluation.columns:
        samples = sorted(set(evaluation["samples_per_prompt"].astype(int)))
        if samples != [profile.eval_samples_per_prompt]:
            problems.append(
                f"evaluated with {samples} samples per prompt, the profile asks for {profile.eval_samples_per_prompt}"
            )
    return problems


def prompt_selection(spec: str) -> Callable[[str], bool]:
    """``--prompts``: comma-separated prompt ids and inclusive ranges ``first..last`` (ids compare as strings, so
    ``privacy-121..privacy-216`` is the zero-padded run between them). ValueError on an empty spec or range end."""
    singles, ranges = set(), []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if ".." in part:
            first, _, last = (x.strip() for x in part.partition(".."))
            if not first or not last:
                raise ValueError(f"--prompts: range {part!r} needs both ends (first..last)")
            ranges.append((first, last))
        else:
            singles.add(part)
    if not singles and not ranges:
        raise ValueError("--prompts: no prompt id given")
    return lambda prompt_id: prompt_id in singles or any(a <= prompt_id <= b for a, b in ranges)


def subset_section(task: str, evaluation: pd.DataFrame, spec: str) -> list[str]:
    """The report's section for ``--prompts``: the evaluation recomputed over those test prompts only."""
    try:
        table = subset_table(evaluation, prompt_selection(spec), seed=load_task(task).spec.acceptance.seed)
    except ValueError as error:
        raise ReportError(f"task '{task}': --prompts {spec}: {error}") from error
    heading = ["## Test prompts " + spec, ""]
    if table.empty:
        return heading + [f"No test prompt of this task matches `{spec}`.", ""]
    verdicts = [
        f"{row.model}: {interval_verdict(row.ci95_low, row.ci95_high)}"
        for row in table.itertuples()
        if row.model != "base"
    ]
    return heading + [
        f"The evaluation above recomputed over the {int(table['prompts'].iloc[0])} test prompts "
        f"`{spec}` alone (same answers and scores; differences against `base`, paired over these "
        "prompts, 95% bootstrap intervals).",
        "",
        markdown_table(table),
        f"95% interval of the difference: {'; '.join(verdicts)}.",
        "",
    ]


def _evaluation_section(evaluation: pd.DataFrame, task: str, family: Family | None) -> list[str]:
    """The evaluation table with each model's interval verdict (against `base`, or `almost_sft` for ALMoST's RL) and,
    with the study's ``family``, its Holm-adjusted p-value and verdict."""
    if family is not None:
        evaluation = evaluation.copy()
        evaluation["holm_p"] = [family.adjusted.get((task, m), float("nan")) for m in evaluation["model"]]
        evaluation["after_holm"] = [
            holm_verdict(d, p) if m not in CONTROLS else ""
            for m, d, p in zip(evaluation["model"], evaluation["difference_vs_base"], evaluation["holm_p"])
        ]
    second = SECOND + "ci95_low" in evaluation.columns
    if second:
        evaluation = _with_second_verdict(evaluation)
    columns = [c for c in EVALUATION_COLUMNS if c in evaluation.columns]
    columns += [c for c in evaluation.columns if c not in columns and c not in ("task", PER_PROMPT)]  # guards, RM score
    # the second reward's columns last, beside the first reward's Holm verdict
    columns = [c for c in columns if not c.startswith(SECOND) and c != SPEARMAN] + [
        c for c in columns if c.startswith(SECOND) or c == SPEARMAN
    ]
    verdicts = [
        f"{row.model}: {interval_verdict(row.ci95_low, row.ci95_high)}"
        for row in evaluation.itertuples()
        if row.model != "base"
    ]
    models = set(evaluation["model"])
    # the evaluation's rows whose difference is not against base
    others = [
        f"`{r}` is against `{r.split(' vs ')[1]}`" for r in ("almost_rl vs almost_sft", "sft vs placebo") if r in models
    ]
    against = f"; the row {' and the row '.join(others)}" if others else ""
    if "seeds" in evaluation.columns and (evaluation["seeds"] > 1).any():
        against += (
            "; a method with `seeds` > 1 was trained at that many seeds: its interval resamples prompts and seeds, "
            "`seed_sd` is the sd of the seeds' mean differences"
        )
    holm = ""
    if family is not None:
        holm = (
            f" `p_value` is the two-sided bootstrap p of each difference; `holm_p` adjusts it by Holm-Bonferroni over "
            f"the study's family of {family.size} contrasts (every method x task of the profile"
            + (f"; {len(family.missing)} not measured yet count with p = 1" if family.missing else "")
            + "), and `after_holm` is the verdict at family-wise error 0.05."
        )
    lines = [
        "## Evaluation",
        "",
        f"Differences are against `base`, paired over prompts, with 95% bootstrap intervals{against}.{holm}",
        "",
        markdown_table(evaluation[columns]),
        f"95% interval of the difference: {'; '.join(verdicts)}.",
        "",
    ]
    if second:
        try:
            scorer = load_task_spec(task).second_scorer
        except TaskError:  # a task folder gone since its evaluation: the note without the scorer's name
            scorer = None
        lines[4:4] = [second_reward_note(scorer), ""]  # a paragraph of its own, before the table
    return lines


def _with_second_verdict(evaluation: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``second_verdict``: each row's second-reward interval read alone (base has none)."""
    evaluation = evaluation.copy()
    bounds = zip(evaluation["model"], evaluation[SECOND + "ci95_low"], evaluation[SECOND + "ci95_high"])
    evaluation[SECOND + "verdict"] = ["" if m == "base" else second_verdict(low, high) for m, low, high in bounds]
    return evaluation


def _header(task: str, con, profile_path: Path, prompts: pd.DataFrame, problems: list[str]) -> list[str]:
    """Title, commit, warnings, the profile as it ran, and the data sizes."""
    shown = profile_path.relative_to(PROJECT_ROOT) if profile_path.is_relative_to(PROJECT_ROOT) else profile_path
    lines = [
        f"# Study report: {task} (profile `{profile_path.stem}`)",
        "",
        f"Written {datetime.date.today().isoformat()} at commit `{git_commit()}`; the commits that made the "
        f"tables are under Provenance.",
        "",
    ]
    if problems:
        lines += ["**Warning: these tables may not come from one run of this profile:**", ""]
        lines += [f"- {problem}" for problem in problems] + [""]
    lines += [
        "## Profile",
        "",
        f"`{shown}`:",
        "",
        "```yaml",
        profile_path.read_text().rstrip("\n"),
        "```",
        "",
    ]
    if "extends" in (yaml.safe_load(profile_path.read_text()) or {}):
        merged = yaml.safe_dump(profile_mapping(profile_path), sort_keys=False).rstrip("\n")
        lines += ["Its settings with `extends` resolved:", "", "```yaml", merged, "```", ""]
    lines += [
        "## Data",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in _data_sizes(con, task, prompts)] + [""]
    return lines


def _checkpoints_section(con, task: str) -> list[str]:
    """Each checkpoint's row: status, rows, steps, losses, time."""
    lines: list[str] = []
    checkpoints = [
        df[[c for c in CHECKPOINT_COLUMNS if c in df.columns]]
        for df in (_table(con, name, task) for name in CHECKPOINT_TABLES)
        if df is not None and len(df)
    ]
    if checkpoints:
        lines += ["## Checkpoints", "", markdown_table(pd.concat(checkpoints, ignore_index=True))]
    return lines


def _null_control_note(evaluation: pd.DataFrame) -> list[str]:
    """What the null control row means, or that it is missing."""
    lines: list[str] = []
    if "base_original" in set(evaluation["model"]):
        lines += [
            "`base_original` is the null control (the packaged student against its exported copy): its interval "
            "should contain 0; if it excludes 0, export precision alone moves the reward and no other row is "
            "to be trusted.",
            "",
        ]
    else:
        lines += [
            "No `base_original` row (the null control; evaluations before it was added lack it): a difference "
            "here may be export precision rather than training.",
            "",
        ]
    return lines


def _provenance_section(runs: list[dict] | None) -> list[str]:
    """The latest run and commit of each step."""
    lines = ["## Provenance", ""]
    if runs:
        lines += [
            "The latest materialization of each step, with the commit of the code that ran it.",
            "",
            markdown_table(pd.DataFrame(runs)),
        ]
    else:
        lines += ["No Dagster run history was available to this report (the tables' runs are not named).", ""]
    return lines


def write_report(
    task: str,
    con: duckdb.DuckDBPyConnection,
    profile_path: Path,
    out: Path,
    problems: list[str] | None = None,
    runs: list[dict] | None = None,
    prompt_subset: str | None = None,
    family: Family | None = None,
    ledger_path: Path | None = None,
) -> Path:
    """Write ``<out>/<task>.md`` and ``<out>/<task>_effects.png`` from the warehouse; ReportError (and nothing
    written) when the task has no prompts or no evaluation. ``problems``: consistency_problems, if the caller has them;
    ``runs``: the task's provenance rows (None: no Dagster instance to ask); ``prompt_subset``: a ``--prompts`` selection
    whose own table follows the evaluation's; ``family``: the study's contrasts for the Holm columns (study_family);
    ``ledger_path``: the ledger whose looks at this task's test split the report counts."""
    evaluation = _table(con, "evaluation", task)
    if evaluation is None:
        raise ReportError(f"task '{task}': the warehouse has no evaluation table (materialize `evaluation` first)")
    if evaluation.empty:
        raise ReportError(f"task '{task}': the evaluation table has no rows for this task")
    prompts = _table(con, "raw_prompts", task)
    if prompts is None or prompts.empty:
        raise ReportError(f"task '{task}': raw_prompts has no rows for this task")
    problems = consistency_problems(con, task, profile_path) if problems is None else problems
    lines = _header(task, con, profile_path, prompts, problems)
    lines += ledger.report_lines(task, evaluated_split(prompts), ledger_path)
    lines += _checkpoints_section(con, task) + settings_lines(con, task)
    lines += _evaluation_section(evaluation, task, family) + diagnostics_lines(con, task, evaluation)
    if prompt_subset:
        lines += subset_section(task, evaluation, prompt_subset)
    lines += _null_control_note(evaluation)
    lines += previous_report_section(out / f"{task}.md", evaluation)
    lines += [f"![effects]({task}_effects.png)", ""] + _provenance_section(runs)
    out.mkdir(parents=True, exist_ok=True)
    effects_plot(evaluation, out / f"{task}_effects.png", f"{task}: effect of each method")
    report = out / f"{task}.md"
    report.write_text("\n".join(lines))
    return report
