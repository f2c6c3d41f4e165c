"""What a run would cost, per asset and task, found by replaying the graph's requests against the call cache (no
model is called): every generation (the chain, DLMA's contrastive answers, ALMoST's four configurations and its
best-of-N, the evaluation's answers), every score (the task's reward, DLMA's log-probabilities, the reward
model's scores, the evaluation's rewards) and every training step. `dsc plan` prints it for what is stale.

A request whose text is known (its inputs are in the cache) is looked up by its own key, so a rebuild after an edit
counts exactly what it will compute. A request that depends on a text not generated yet, or on a model not yet
trained, counts as one call each: an upper bound, since two such answers may turn out identical and share a score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dsc_assets.defs.inputs import Environment
from dsc_assets.lib.almost import CONFIGS, RULE_PAIRS, config_messages
from dsc_assets.lib.chat import ChainMessages
from dsc_assets.lib.tasks import Task
from resources.hashing import call_key
from resources.models import resolve_model
from resources.settings import SEEDED
from resources.stores import open_cache

CHECKPOINTS = {
    "sft_checkpoint": "sft",
    "dpo_checkpoint": "dpo",
    "rdpo_checkpoint": "rdpo",
    "dlma_checkpoint": "dlma",
    "almost_sft_checkpoint": "almost",
    "almost_rl_checkpoint": "almost",
    "placebo_checkpoint": "placebo",
}


@dataclass
class Cost:
    calls: int = 0  # generations
    scores: int = 0  # rewards, log-probabilities, reward-model scores
    cached: int = 0  # requests the cache already answers
    steps: int = 0  # training steps (at most: the rows that survive the filters are not known yet)
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    seconds: float = 0.0  # at the rates measured in the cache (mean seconds per computed call of each model)

    @property
    def model_calls(self) -> int:
        return self.calls + self.scores


class Replay:
    """One task's requests against the cache: known keys are looked up, unknown ones count as calls."""

    def __init__(self, task: Task, env: Environment):
        self.task, self.env, self.settings = task, env, env.settings
        self.cache = open_cache(env.llm.cache_path, read_only=True)
        self.params = task.sampling_for(self.settings.max_tokens_cap)
        self.chain = ChainMessages(task)
        self.costs: dict[str, Cost] = {}
        self.seen: set[str] = set()
        self.rates: dict[tuple[str, str], float] = {}

    def cost(self, asset: str) -> Cost:
        return self.costs.setdefault(asset, Cost())

    def rate(self, model: str, kind: str = "chat") -> float:
        """Seconds per computed call of ``model`` as measured in the cache: each call's share of its batch's time
        (the generator's own ``seconds_per_call``: a server pool sums its endpoints' rates). A checkpoint not
        trained yet (``new:<method>``) answers at the packaged student's rate; a model never run at the mean of
        every call of its kind (a score is not charged a generation's time), else of every call."""
        if (model, kind) not in self.rates:
            measured = model
            if model.startswith("new:"):
                measured = self.env.memo(("student",), self.env.student.model_identity)
            if measured == self.env.memo(("generator",), self.env.llm.model_identity):
                own = self.env.llm.seconds_per_call(self.cache)
            elif model == "reward_model":  # its version is not known before it trains: any this home scored with
                own = self.cache.mean_seconds("reward_model:*")
            else:
                own = self.cache.mean_seconds(measured)
            rates = (own, self.cache.mean_seconds(kind=kind), self.cache.mean_seconds())
            self.rates[(model, kind)] = next((r for r in rates if r is not None), 0.0)
        return self.rates[(model, kind)]

    def chat(self, asset: str, model: str, messages: list[dict] | None, seed_offset: int = 0) -> str | None:
        """The answer's text when the cache has it; else one generation counted (None: the text is unknown)."""
        cost, params = self.cost(asset), self.params.model_copy(update={"seed": self.params.seed + seed_offset})
        if messages is not None:
            key = call_key("chat", model, messages, params)
            hit = self.cache.get(key)
            if hit is not None or key in self.seen:
                cost.cached += hit is not None
                return hit["text"] if hit is not None else None
            self.seen.add(key)
        cost.calls += 1
        cost.prompt_tokens += sum(len(m["content"]) for m in messages) // 4 if messages else 0  # ~4 chars a token
        cost.max_completion_tokens += params.max_tokens
        cost.seconds += self.rate(model)
        return None

    def score(self, asset: str, kind: str, model: str, *parts) -> None:
        """One score (``parts`` None: of a text not known yet, counted as computed)."""
        cost = self.cost(asset)
        if parts and None not in parts:
            key = call_key(kind, model, *parts)
            if key in self.seen:
                return
            self.seen.add(key)
            if self.cache.get(key) is not None:
                cost.cached += 1
                return
        cost.scores += 1
        cost.seconds += self.rate(model, kind)


def run_cost(task: Task, env: Environment) -> dict[str, Cost]:
    """Every model call and training step a run of the whole graph for ``task`` would make, per asset."""
    replay = Replay(task, env)
    settings = env.settings
    train = [p for p in task.prompts if task.split_of(p.id) == "train"][: settings.max_prompts_per_task]
    test = [p for p in task.prompts if task.split_of(p.id) == settings.eval_split][: settings.max_eval_prompts_per_task]
    generator = env.memo(("generator",), env.llm.model_identity)
    for record in train:
        _chain(replay, generator, record.prompt)
    if settings.builds("dlma") and task.spec.contrastive is not None:
        _dlma(replay, generator, train)
    if settings.builds("almost") and task.spec.almost is not None:
        _almost(replay, generator, train)
    _training(replay, len(train))
    _evaluation(replay, test)
    return replay.costs


def _chain(replay: Replay, generator: str, prompt: str) -> None:
    """Draft, critique and revision steps of one train prompt, then the task's reward of each answer."""
    chain, spec = replay.chain, replay.task.spec
    scorer = replay.env.memo(("scorer-identity", replay.task.name), lambda: _scorer(replay).identity())
    response = replay.chat("drafts", generator, chain.draft(prompt))
    answers = [response]
    for step in range(1, spec.revision_steps + 1):
        asset = "critiques" if step == 1 else "revisions"
        critique = replay.chat(asset, generator, chain.critique(prompt, response) if response is not None else None)
        known = response is not None and critique is not None
        response = replay.chat("revisions", generator, chain.revision(prompt, response, critique) if known else None)
        answers.append(response)
    for answer in answers:
        replay.score("reward_scores", "score", scorer, prompt, answer)


def _scorer(replay: Replay):
    return replay.env.rewards.for_task(replay.task.spec.scorer)


def _dlma(replay: Replay, generator: str, train) -> None:
    """Two contrastive answers per train prompt, then four log-probabilities each (DLMA's self-reward)."""
    affixes, spec = replay.task.spec.contrastive, replay.task.spec
    rewards = replay.env.rewards
    judge = replay.env.memo(("judge-sha",), lambda: resolve_model(rewards.judge_model, rewards.model_cache_dir).sha256)
    positive, negative = (f"{spec.system_prompt} {a}".strip() for a in (affixes.positive_affix, affixes.negative_affix))
    for record in train:
        a1 = replay.chat(
            "contrastive_pairs", generator, replay.chain.contrastive(record.prompt, affixes.positive_affix)
        )
        a2 = replay.chat(
            "contrastive_pairs", generator, replay.chain.contrastive(record.prompt, affixes.negative_affix)
        )
        for system, answer in ((positive, a1), (negative, a1), (positive, a2), (negative, a2)):
            replay.score("self_reward_scores", "logprob", judge, system, record.prompt, answer)


def _almost(replay: Replay, generator: str, train) -> None:
    """Four configurations per train prompt, best-of-N more samples of A, and the reward model's scores (its
    version is not known before it is trained: every score counts)."""
    student = replay.env.memo(("student",), replay.env.student.model_identity)
    almost = replay.task.spec.almost
    for record in train:
        for config, (role, _) in CONFIGS.items():
            replay.chat(
                "almost_responses",
                generator if role == "teacher" else student,
                config_messages(replay.task, config, record.prompt),
            )
        for k in range(1, almost.best_of_n):  # k = 0 is configuration A's own answer
            replay.chat("rmsp_demonstrations", generator, config_messages(replay.task, "A", record.prompt), k)
        for _ in range(almost.best_of_n):
            replay.score("rmsp_demonstrations", "score", "reward_model")
    heldout = math.ceil(len(train) * almost.heldout_fraction)
    pairs = sum(len(RULE_PAIRS[rule]) for rule in almost.rules)
    for _ in range(2 * heldout * pairs):  # chosen and rejected of every held-out comparison, at most
        replay.score("reward_model", "score", "reward_model")
    for _ in range(2 * len(train)):  # the dSC pairs scored by the reward model (at most one per train prompt)
        replay.score("reward_model_agreement", "score", "reward_model")


def _training(replay: Replay, rows: int) -> None:
    """Optimizer steps of each checkpoint, at most (every train prompt a row), and the reward model's."""
    trainer = replay.env.trainer
    batch = trainer.per_device_batch_size * trainer.grad_accum

    def steps(per_epoch: int) -> int:
        return trainer.max_steps if trainer.max_steps > 0 else math.ceil(per_epoch * trainer.epochs)

    rates = _seconds_per_step(replay.settings.artifact_path("checkpoints"))
    precision = replay.env.memo(("precision",), lambda: trainer.precision()[0])
    for asset, method in {**CHECKPOINTS, "reward_model": "almost"}.items():
        if replay.settings.builds(method) and (method != "almost" or replay.task.spec.almost is not None):
            folder = asset.removesuffix("_checkpoint")  # checkpoints/<method folder>/<task>/<version>/
            family = _FAMILY.get(folder, "")
            keys = ((folder, precision), (folder, ""), (family, precision), (family, ""), ("", precision))
            rate = next((rates[k] for k in keys if k in rates), 0.0)
            trainings = replay.settings.seeds_for(replay.task.name) if folder in SEEDED else 1
            # RL: a step is one prompt's k samples (RLOO's batch is k), so an epoch is a step per prompt
            count = steps(rows if folder == "almost_rl" else math.ceil(rows / batch))
            replay.cost(asset).steps += count * trainings
            replay.cost(asset).seconds += count * trainings * (rate or rates.get(("", ""), 0.0))


# What a kind of training's step costs like, for a kind this home has not trained yet: a preference step runs the
# chosen and the rejected answer (DPO, rDPO, DLMA, the reward model), a sequence step one answer (SFT, the placebo,
# ALMoST's SFT); measured, a DPO step was 1.4-2x an SFT step (bench/README.md, "Training precision").
_FAMILY = {
    **dict.fromkeys(("sft", "placebo", "almost_sft"), "family:sequence"),
    **dict.fromkeys(("dpo", "rdpo", "dlma", "reward_model"), "family:pair"),
}


def _seconds_per_step(checkpoints: Path) -> dict[tuple[str, str], float]:
    """Seconds per optimizer step of the checkpoints trained in this home, keyed by (kind, precision), with "" for
    any kind or any precision; empty before any. A summary's median step (``step_seconds``) where it has one: its
    whole ``seconds`` (setup and export included) also counts any time the run sat paused or shared the cores, and
    one such checkpoint (a reward model paused for hours: 47 s a step for a 12.5 s median) made the plan charge
    every training 4x its time."""
    totals: dict[tuple[str, str], list[float]] = {}
    for summary in checkpoints.glob("*/*/*/summary.json") if checkpoints.is_dir() else []:
        data = json.loads(summary.read_text())
        kind, precision = summary.parent.parent.parent.name, str(data.get("precision") or "float32")
        steps = float(data.get("steps", 0))
        seconds = float(data["step_seconds"]) * steps if data.get("step_seconds") else float(data.get("seconds", 0))
        family = _FAMILY.get(kind, "")
        for key in {(kind, precision), (kind, ""), (family, precision), (family, ""), ("", precision), ("", "")}:
            total, counted = totals.setdefault(key, [0.0, 0.0])
            totals[key] = [total + seconds, counted + steps]
    return {key: seconds / steps for key, (seconds, steps) in totals.items() if steps}


def _evaluation(replay: Replay, test) -> None:
    """Every evaluated model's answers to the test prompts (seeded samples) and the reward of each (and the second
    reward's, for a task with a ``second_scorer``). The packaged student's answers are looked up; the exported base
    and the checkpoints are new models: every answer counts."""
    student = replay.env.memo(("student",), replay.env.student.model_identity)
    scorer = replay.env.memo(("scorer-identity", replay.task.name), lambda: _scorer(replay).identity())
    # the evaluation's second reward (task.yaml's, or the profile's for this task) scores every answer too
    second_scorer = replay.task.second_scorer_for(replay.settings.second_scorers)
    second = None
    if second_scorer is not None:
        second = replay.env.memo(
            ("second-scorer-identity", replay.task.name), lambda: replay.env.rewards.for_task(second_scorer).identity()
        )
    seeds = replay.settings.seeds_for(replay.task.name)
    models = ["base_original", "base"] + [
        f"{m}@{k}" if k else m
        for a, m in CHECKPOINTS.items()
        if replay.settings.builds(m) and (m != "almost" or replay.task.spec.almost is not None)
        for k in range(seeds if a.removesuffix("_checkpoint") in SEEDED else 1)
    ]
    for model in models:
        for k in range(replay.settings.eval_samples_per_prompt):
            for record in test:
                messages = replay.chain.draft(record.prompt)
                text = replay.chat(
                    "evaluation",
                    student if model == "base_original" else f"new:{model}",
                    messages if model == "base_original" else None,
                    k,
                )
                replay.score("evaluation", "score", scorer, record.prompt, text)
                if second is not None:
                    replay.score("evaluation", "score", second, record.prompt, text)
                if replay.settings.builds("almost") and replay.task.spec.almost is not None:
                    replay.score("evaluation", "score", "reward_model")
