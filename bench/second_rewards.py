"""Candidate second rewards (issue 24) against hand labels, per task: Spearman and AUC with the labels, Spearman with
the task's first reward, milliseconds per answer.

    DSC_LLAMA_THREADS=1 python bench/second_rewards.py [--tasks sentiment,privacy,...]
        [--json reports/second_rewards/results.json]

Reads ``reports/second_rewards/answers/<task>.jsonl`` (bench/label_answers.py) and ``labels/<task>.jsonl`` (labels
made before any scorer ran; labels/README.md has the rules). Every score is oriented so that higher is better on
the task's criterion (more positive, less personal data, more harmless, more in the neutral role, more objective).
The first reward is the project's own scorer (resources/rewards.py, the task's ``scorer:``); the candidates are in
bench/second_candidates.py. Scores go through a fresh call cache, so the timings are real computation; a judge's
model is loaded (and its first batch run) before its clock starts. One llama.cpp thread throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resources.threads  # noqa: E402,F401  (OMP_WAIT_POLICY before llama_cpp loads)
from bench.second_candidates import candidates  # noqa: E402
from dsc_assets.lib.tasks import load_task  # noqa: E402
from resources.rewards import RewardModels  # noqa: E402

TASKS = ("sentiment", "privacy", "safety", "roleplay", "sycophancy")
ROOT = Path("reports/second_rewards")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None  # a constant scorer has no rank correlation
    return round(float(spearmanr(a, b).statistic), 3)


def auc(scores: list[float], binary: list[int]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(binary)) < 2:
        return None
    return round(float(roc_auc_score(binary, scores)), 3)


def first_reward(task_name: str, cache: str, teacher_cache: str):
    """The task's own scorer, as the pipeline builds it (the judge on the 1.5B teacher, 1 thread)."""
    spec = load_task(task_name).spec.scorer
    models = RewardModels(
        cache_path=cache, judge_model="qwen2.5-coder-1.5b", model_cache_dir=teacher_cache, n_threads=1, batch_size=8
    )
    scorer = models.for_task(spec)
    return f"first: {spec.name} {dict(spec.options) or ''}".strip(), scorer.score


def timed(score, prompts: list[str], answers: list[str], warm: bool) -> tuple[list[float], float]:
    """Scores and ms per answer; ``warm``: score the first answer once before the clock (model load, first batch)."""
    if warm:
        score(prompts[:1], [answers[0] + " "])  # not the same text: the cache must not answer the timed call
    started = time.perf_counter()
    values = score(prompts, answers)
    return [float(v) for v in values], (time.perf_counter() - started) * 1000 / len(answers)


def measure(task_name: str, cache_dir: Path, teacher_cache: str, all_judges: bool) -> dict:
    answers = read_jsonl(ROOT / "answers" / f"{task_name}.jsonl")
    labels = {row["answer_id"]: row for row in read_jsonl(ROOT / "labels" / f"{task_name}.jsonl")}
    assert set(labels) == {a["answer_id"] for a in answers}, "every answer needs exactly one label"
    assert all(a["split"] == "dev" for a in answers), "only dev prompts are measured"
    prompts, texts = [a["prompt"] for a in answers], [a["answer"] for a in answers]
    gold = [float(labels[a["answer_id"]]["label"]) for a in answers]
    binary = [int(labels[a["answer_id"]]["binary"]) for a in answers]
    name, score = first_reward(task_name, str(cache_dir / f"{task_name}-first.duckdb"), teacher_cache)
    rows = []
    first, ms = timed(score, prompts, texts, warm=True)
    rows.append(row_of(name, first, ms, gold, binary, first))
    report(task_name, rows[-1])
    for candidate in candidates(task_name, cache_dir, all_judges):
        values, ms = timed(candidate.score, prompts, texts, warm=candidate.warm)
        rows.append({**row_of(candidate.name, values, ms, gold, binary, first), "options": candidate.options})
        report(task_name, rows[-1])
    return {
        "n": len(answers),
        "prompts": len({a["prompt_id"] for a in answers}),
        "label_counts": {str(k): gold.count(k) for k in sorted(set(gold))},
        "binary_positive": sum(binary),
        "scorers": rows,
        "scores": {row["scorer"]: row.pop("values") for row in rows},
    }


def report(task_name: str, row: dict) -> None:
    print(task_name, json.dumps({k: v for k, v in row.items() if k != "values"}), flush=True)


def row_of(name: str, values: list[float], ms: float, gold: list[float], binary: list[int], first: list[float]):
    return {
        "scorer": name,
        "n": len(values),
        "spearman_labels": spearman(values, gold),
        "auc": auc(values, binary),
        "spearman_first": spearman(values, first),
        "ms_per_answer": round(ms, 2),
        "values": values,
    }


def spearman_interval(values: list[float], gold: list[float], rounds: int = 2000) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the Spearman correlation (answers resampled, seed 0)."""
    import numpy as np
    from scipy.stats import spearmanr

    if len(set(values)) < 2:
        return None
    rng, x, y = np.random.default_rng(0), np.asarray(values), np.asarray(gold)
    draws = []
    for _ in range(rounds):
        index = rng.integers(0, len(x), len(x))
        if len(set(x[index])) > 1 and len(set(y[index])) > 1:
            draws.append(spearmanr(x[index], y[index]).statistic)
    low, high = np.percentile(draws, [2.5, 97.5])
    return round(float(low), 2), round(float(high), 2)


def tables(results: dict) -> str:
    """One markdown table per task from results.json (what reports/second_rewards.md shows)."""
    fmt = lambda v: "–" if v is None else f"{v:+.3f}" if isinstance(v, float) and abs(v) <= 1 else str(v)  # noqa: E731
    lines = []
    for task, result in results.items():
        counts = ", ".join(f"{float(k):g}: {v}" for k, v in result["label_counts"].items())
        labels = {row["answer_id"]: row for row in read_jsonl(ROOT / "labels" / f"{task}.jsonl")}
        answers = read_jsonl(ROOT / "answers" / f"{task}.jsonl")
        gold = [float(labels[a["answer_id"]]["label"]) for a in answers]
        lines += [
            f"### {task}",
            "",
            f"{result['n']} answers to {result['prompts']} dev prompts; labels {counts}; binary positives "
            f"{result['binary_positive']} of {result['n']}.",
            "",
            "| scorer | n | Spearman vs labels [95% bootstrap] | AUC | Spearman vs first reward | ms/answer |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["scorers"]:
            auc_text = "–" if row["auc"] is None else f"{row['auc']:.3f}"
            interval = spearman_interval(result["scores"][row["scorer"]], gold)
            ci = "" if interval is None else f" [{interval[0]:+.2f}, {interval[1]:+.2f}]"
            name = row["scorer"]
            if name.startswith("first: judge"):
                name = "**first: judge, 1.5B teacher**"
            elif name.startswith("first:"):
                name = f"**{name}**"
            lines.append(
                f"| {name} | {row['n']} | {fmt(row['spearman_labels'])}{ci} | {auc_text} | "
                f"{fmt(row['spearman_first'])} | {row['ms_per_answer']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def merge(results: dict, other: dict) -> dict:
    """``other``'s tasks into ``results``; for a task in both, only the scorers ``results`` lacks (the first reward
    and the rules that both runs scored are kept from ``results``)."""
    for task, result in other.items():
        if task not in results:
            results[task] = result
            continue
        known = {row["scorer"] for row in results[task]["scorers"]}
        for row in result["scorers"]:
            if row["scorer"] not in known:
                results[task]["scorers"].append(row)
                results[task]["scores"][row["scorer"]] = result["scores"][row["scorer"]]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--json", default=str(ROOT / "results.json"))
    parser.add_argument("--teacher-cache", default=".dsc/models", help="where the 1.5B teacher is assembled")
    parser.add_argument("--all-judges", action="store_true", help="judges on sentiment and privacy too (slow)")
    parser.add_argument("--tables", action="store_true", help="print the markdown tables of --json and stop")
    parser.add_argument("--merge", default="", help="comma-separated results files to merge into --json, then stop")
    args = parser.parse_args()
    out = Path(args.json)
    if args.merge:
        results = json.loads(out.read_text())
        for other in args.merge.split(","):
            results = merge(results, json.loads(Path(other).read_text()))
        out.write_text(json.dumps(results, indent=1) + "\n")
        return
    if args.tables:
        print(tables(json.loads(out.read_text())))
        return
    results = json.loads(out.read_text()) if out.is_file() else {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.tasks.split(","):
            results[name] = measure(name, Path(folder), args.teacher_cache, args.all_judges)
            out.write_text(json.dumps(results, indent=1) + "\n")  # each task saved as soon as it is measured


if __name__ == "__main__":
    main()
