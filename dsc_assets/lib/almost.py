"""ALMoST's rules (Kim et al., 2023): four ranked generator configurations, the comparisons they imply, the
heuristic filter and the prompt-disjoint held-out fold. Pure code; the assets are in defs/almost/.

Configurations (teacher = the ``llm`` resource, student = the ``student`` resource):
    A  teacher, system prompt + positive affix + demonstrations    (best)
    B  teacher, system prompt only
    C  student, system prompt + positive affix + demonstrations
    D  student, system prompt only                                 (worst)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsc_assets.lib.chat import ChainMessages
from dsc_assets.lib.task_spec import Almost
from dsc_assets.lib.tasks import Task
from resources.hashing import content_hash

CONFIGS = {"A": ("teacher", True), "B": ("teacher", False), "C": ("student", True), "D": ("student", False)}
# Which configuration beats which under each rule; B vs C is never compared (the two rules disagree there).
RULE_PAIRS = {"prompt": (("A", "B"), ("C", "D")), "size": (("A", "C"), ("B", "D")), "both": (("A", "D"),)}
RESPONSE_COLUMNS = ["task", "prompt_id", "prompt", "config", "model_role", "text", "finish_reason", "completion_tokens"]
COMPARISON_COLUMNS = [
    "task",
    "prompt_id",
    "prompt",
    "rule",
    "chosen_config",
    "rejected_config",
    "chosen",
    "rejected",
    "fold",
    "kept",
    "drop_reason",
]


def config_messages(task: Task, config: str, prompt: str) -> list[dict]:
    """The chat a configuration sends: the plain ones as the dSC drafts do, the prompted ones with the task's
    positive affix and its demonstrations as earlier turns."""
    _, prompted = CONFIGS[config]
    chain, spec = ChainMessages(task), task.spec
    if not prompted:
        return chain.draft(prompt)
    affix = spec.contrastive.positive_affix if spec.contrastive else ""
    return chain.contrastive(prompt, affix, [(demo.prompt, demo.response) for demo in spec.almost.demonstrations])


def heldout_prompts(prompt_ids: list[str], almost: Almost, seed: int) -> set[str]:
    """A prompt-disjoint held-out fold: a prompt's fold depends only on its id and the seed; with two or more
    prompts at least one is held out and one is not."""
    draws = {pid: int(content_hash("almost-fold", seed, pid, length=8), 16) / 16**8 for pid in prompt_ids}
    heldout = {pid for pid, draw in draws.items() if draw < almost.heldout_fraction}
    if len(draws) >= 2 and not heldout:
        heldout = {min(draws, key=draws.get)}
    if len(draws) >= 2 and heldout == set(draws):
        heldout.discard(max(draws, key=draws.get))
    return heldout


def drop_reason(chosen: pd.Series, rejected: pd.Series, mean_words: float, std_words: float, almost: Almost) -> str:
    """Why a comparison is implausible ('' if it is kept). The paper filters with a reward heuristic whose exact
    thresholds we do not have; ours, in order: an empty answer; identical texts; a cut-off answer (if the task says
    so); and length: keep when the chosen answer is at least as long as the rejected one, or at least
    mean − std/2 words of that prompt's answers (a much shorter "better" answer is more often a failure)."""
    chosen_text, rejected_text = str(chosen["text"]).strip(), str(rejected["text"]).strip()
    if not chosen_text or not rejected_text:
        return "empty"
    if " ".join(chosen_text.split()) == " ".join(rejected_text.split()):
        return "identical"
    if almost.drop_truncated and "length" in (chosen["finish_reason"], rejected["finish_reason"]):
        return "truncated"
    chosen_words, rejected_words = len(chosen_text.split()), len(rejected_text.split())
    if chosen_words < rejected_words and chosen_words < mean_words - std_words / 2:
        return "length"
    return ""


def synthesize_comparisons(responses: pd.DataFrame, almost: Almost, seed: int) -> pd.DataFrame:
    """Every comparison the task's rules imply, per prompt, with its fold and whether the filter keeps it."""
    heldout = heldout_prompts(list(dict.fromkeys(responses["prompt_id"])), almost, seed)
    rows = []
    for prompt_id, group in responses.groupby("prompt_id", sort=False):
        by_config = {row["config"]: row for _, row in group.iterrows()}
        words = np.array([len(str(t).split()) for t in group["text"]], dtype=float)
        mean_words, std_words = float(words.mean()), float(words.std())
        for rule in almost.rules:
            for chosen_config, rejected_config in RULE_PAIRS[rule]:
                chosen, rejected = by_config.get(chosen_config), by_config.get(rejected_config)
                if chosen is None or rejected is None:
                    continue
                reason = drop_reason(chosen, rejected, mean_words, std_words, almost)
                rows.append(
                    {
                        "task": chosen["task"],
                        "prompt_id": prompt_id,
                        "prompt": chosen["prompt"],
                        "rule": rule,
                        "chosen_config": chosen_config,
                        "rejected_config": rejected_config,
                        "chosen": chosen["text"],
                        "rejected": rejected["text"],
                        "fold": "heldout" if prompt_id in heldout else "train",
                        "kept": reason == "",
                        "drop_reason": reason,
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
