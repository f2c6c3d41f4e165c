"""The schema of ``task.yaml`` and ``prompts.jsonl`` lines (pydantic): what a task may say, with its ranges, and
what a person should write where a field is missing or wrong."""

from __future__ import annotations

import difflib
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsc_assets.lib.quality import QualityRules
from resources.llm import SamplingParams
from resources.models import KNOWN_MODELS
from resources.text_scorers import PII_KINDS


class TaskError(ValueError):
    """A task folder is malformed. The message is meant for the person who edits it."""


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(template: str, required: set[str], allowed: set[str]) -> str:
    try:
        found = _placeholders(template)
    except ValueError as error:
        raise ValueError(f"is not a valid template ({error}); write literal braces as {{{{ and }}}}") from None
    missing, unknown = required - found, found - allowed
    if missing:
        raise ValueError(f"must contain {', '.join('{' + m + '}' for m in sorted(missing))}")
    if unknown:
        raise ValueError(
            f"uses unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
            f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )
    return template


class Split(BaseModel):
    """Train / dev / test by a hash of the seed and each prompt's group: a group never crosses splits."""

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of groups held out for the study's test.")
    seed: int = Field(0, ge=0, description="Seed of the deterministic split (a hash of seed and group).")
    dev_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of groups held out for development: where settings are chosen."
    )
    group_by: Literal["id", "linked"] = Field(
        "id",
        description="id: each prompt is its own group unless its line declares a `group`; linked: the connected "
        "components of declared groups, near-duplicate wordings and shared names (lib/leaks.py).",
    )

    @model_validator(mode="after")
    def _fractions(self) -> "Split":
        if self.test_fraction + self.dev_fraction >= 1.0:
            raise ValueError("test_fraction + dev_fraction must be below 1 (train needs prompts)")
        return self

    def identity(self) -> dict:
        """What decides the split, without the fields still at the defaults they had before they existed (a task
        that does not use them keeps its versions)."""
        data = self.model_dump(mode="json")
        for name, before in (("dev_fraction", 0.0), ("group_by", "id")):
            if data[name] == before:
                del data[name]
        return data


class Contrastive(BaseModel):
    """DLMA: the same query under a positive and a negative system affix."""

    model_config = ConfigDict(extra="forbid")

    positive_affix: str = Field(min_length=1)
    negative_affix: str = Field(min_length=1)


class _VaderOptions(BaseModel):  # vader, textblob, afinn: no options
    model_config = ConfigDict(extra="forbid")


class _PiiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: list[str] = Field(default=None, min_length=1, description="Presidio entity names, e.g. PERSON.")
    score_threshold: float = Field(default=0.4, ge=0.0, le=1.0)


class _JudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="A yes/no question about the response.")
    invert: bool = False
    model: str | None = Field(
        None, description="The judge's model (a packaged model's name or a .gguf path); none: the profile's judge."
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_MODELS and not value.endswith(".gguf"):
            raise ValueError(f"names unknown model '{value}' (known: {', '.join(KNOWN_MODELS)}, or a .gguf path)")
        return value


class _PiiRulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Literal[PII_KINDS]] = Field(default=list(PII_KINDS), min_length=1)  # type: ignore[valid-type]


class _SafetyRulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refusal_weight: float = Field(0.5, ge=0.0, le=1.0, description="Share of the reward a refusal earns.")


# The scorers resources/rewards.py builds (RewardModels.for_task), with the options each accepts: checked when the
# task loads, not when reward_scores first runs after the whole chain was generated.
SCORER_OPTIONS: dict[str, type[BaseModel]] = {
    "vader": _VaderOptions,
    "pii": _PiiOptions,
    "judge": _JudgeOptions,
    "textblob": _VaderOptions,
    "afinn": _VaderOptions,
    "pii_rules": _PiiRulesOptions,
    "safety_rules": _SafetyRulesOptions,
    "sycophancy_rules": _VaderOptions,
    "roleplay_rules": _VaderOptions,
}


class Scorer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Registered scorer name: vader, pii, judge, textblob, afinn, pii_rules, safety_rules, sycophancy_rules, "
        "roleplay_rules."
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SCORER_OPTIONS:
            close = difflib.get_close_matches(value, list(SCORER_OPTIONS), n=1)
            raise ValueError(
                f"names unknown scorer '{value}'{f'; did you mean {close[0]!r}?' if close else ''} "
                f"(known: {', '.join(SCORER_OPTIONS)})"
            )
        return value

    @model_validator(mode="after")
    def _options(self) -> "Scorer":
        try:
            SCORER_OPTIONS[self.name].model_validate(self.options)
        except ValidationError as error:
            known = ", ".join(SCORER_OPTIONS[self.name].model_fields) or "none"
            problems = "; ".join(
                f"option '{'.'.join(map(str, e['loc']))}' "
                + (
                    "is missing"
                    if e["type"] == "missing"
                    else "is unknown"
                    if e["type"] == "extra_forbidden"
                    else e["msg"].removeprefix("Value error, ")
                )
                for e in error.errors()
            )
            raise ValueError(f"scorer '{self.name}': {problems} (known options: {known})") from None
        return self


class Acceptance(BaseModel):
    """Metropolis-Hastings acceptance of a revision over its draft."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, description="0 keeps a revision only if it strictly improves (greedy).")
    seed: int = Field(0, ge=0)
    min_rate: float = Field(0.0, ge=0.0, le=1.0, description="Quality gate: lowest acceptable acceptance rate.")
    max_rate: float = Field(1.0, ge=0.0, le=1.0, description="Quality gate: highest acceptable acceptance rate.")


class Demonstration(BaseModel):
    """One hand-written example exchange, shown to ALMoST's "better-prompted" configurations as a prior turn."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)


ALMOST_RULES = ("prompt", "size", "both")


class Almost(BaseModel):
    """ALMoST: synthetic comparisons from ranked generator configurations, a reward model, best-of-N, RL."""

    model_config = ConfigDict(extra="forbid")

    demonstrations: list[Demonstration] = Field(
        min_length=1, max_length=8, description="few-shot examples for the better-prompted configurations"
    )
    best_of_n: int = Field(4, ge=1, le=16, description="samples per prompt that the reward model picks from (RMSP)")
    rules: list[Literal["prompt", "size", "both"]] = Field(default_factory=lambda: list(ALMOST_RULES), min_length=1)
    heldout_fraction: float = Field(
        0.25,
        gt=0.0,
        lt=1.0,
        description="share of train prompts whose comparisons "
        "are held out to measure the reward model (prompt-disjoint)",
    )
    drop_truncated: bool = Field(True, description="drop comparisons with an answer cut off at max_tokens")


class PreferenceTraining(BaseModel):
    """``trainer:`` in ``task.yaml``: this task's settings of the preference losses (DPO, rDPO, DLMA), over the
    profile's. Only settings no other training reads: SFT, ALMoST and the exported base stay the profile's, so one
    task's override retrains that task's preference checkpoints and nothing else (``METHOD_SETTINGS``)."""

    model_config = ConfigDict(extra="forbid")

    dpo_beta: float | None = Field(None, gt=0)
    dpo_learning_rate: float | None = Field(None, gt=0, description="null: the profile's learning_rate")
    dpo_sft_weight: float | None = Field(None, ge=0)
    rdpo_tau: float | None = Field(None, gt=0)
    dlma_gamma: float | None = None

    def overrides(self) -> dict[str, Any]:
        """The settings this task sets (an explicit ``dpo_learning_rate: null`` means SFT's rate, so unset fields are
        left out rather than ``None`` ones)."""
        return self.model_dump(exclude_unset=True)


class TaskSpec(BaseModel):
    """The contents of ``task.yaml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    system_prompt: str = Field(min_length=1)
    critique_template: str
    revision_template: str
    revision_steps: int = Field(1, ge=1, le=5)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    split: Split = Field(default_factory=Split)
    contrastive: Contrastive | None = None
    scorer: Scorer | None = None
    # The evaluation's second reward: it scores every evaluated answer beside ``scorer`` and nothing else reads it
    # (no acceptance, pair, DLMA or ALMoST step), so it never selects the data it judges.
    second_scorer: Scorer | None = None
    acceptance: Acceptance = Field(default_factory=Acceptance)
    quality: QualityRules = Field(default_factory=QualityRules)
    almost: Almost | None = None
    # Preference pairs whose chosen answer fails a guard its rejected answer passes are dropped (guards.py): a
    # revision that loses the story's place is no preference to learn, whatever its reward.
    pair_guards: list[Literal["on_topic", "place_kept"]] = Field(default_factory=list)
    # The preference losses' settings for this task, over the profile's trainer (tasks differ in how far DPO can
    # push before an answer stops doing its job).
    trainer: PreferenceTraining = Field(default_factory=PreferenceTraining)

    @field_validator("critique_template")
    @classmethod
    def _critique(cls, value: str) -> str:
        return _check_template(value, {"response"}, {"prompt", "response"})

    @field_validator("revision_template")
    @classmethod
    def _revision(cls, value: str) -> str:
        return _check_template(value, {"response", "critique"}, {"prompt", "response", "critique"})

    @model_validator(mode="after")
    def _rates(self) -> "TaskSpec":
        if self.acceptance.min_rate > self.acceptance.max_rate:
            raise ValueError("acceptance.min_rate must not exceed acceptance.max_rate")
        if self.second_scorer is not None and self.second_scorer == self.scorer:
            raise ValueError("second_scorer is the same as scorer: a second reward must be another scorer or model")
        return self


REMOVED_METHOD = (
    "field 'method' is no longer a task setting: every task builds all six checkpoints (sft, dpo, rdpo, dlma, "
    "almost_sft, almost_rl; a profile's `methods` picks which) and the evaluation compares them; delete the "
    "'method:' line"
)

# What a person should write, per field, when it is missing or wrong.
FIELD_HINTS = {
    "description": "a one-line string saying what the task teaches",
    "system_prompt": "a string: the system message for drafts",
    "critique_template": "a string with {response} (and optionally {prompt})",
    "revision_template": "a string with {response} and {critique} (and optionally {prompt})",
    "revision_steps": "an integer from 1 to 5",
    "sampling": "a mapping with temperature, top_p, top_k, max_tokens, repeat_penalty, seed, stop",
    "split": "a mapping with test_fraction and dev_fraction (0 to <1, together < 1), seed, group_by (id or linked)",
    "contrastive": "a mapping with positive_affix and negative_affix",
    "scorer": "a mapping with name (vader, pii, judge, textblob, afinn, pii_rules, safety_rules, sycophancy_rules or roleplay_rules) and options",
    "second_scorer": "a mapping like scorer's: the evaluation's second reward (name and options)",
    "acceptance": "a mapping with temperature, seed, min_rate, max_rate",
    "almost": "a mapping with demonstrations (a list of {prompt, response}), best_of_n, rules (prompt, size, "
    "both), heldout_fraction, drop_truncated",
    "pair_guards": "a list of guards: on_topic, place_kept",
    "trainer": "a mapping of preference-training settings: dpo_beta, dpo_learning_rate, dpo_sft_weight, rdpo_tau, "
    "dlma_gamma",
    "quality": "a mapping of quality thresholds: min_rows, min_chars, max_chars, max_repetition, max_echo, "
    "max_source_echo, max_unchanged_rate, max_template_echo, max_duplicate_rate, mostly",
}


class PromptRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank")
        return value
