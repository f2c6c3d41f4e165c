"""The one row schema shared by drafts, critiques and revisions, and the helpers that turn rows into outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import dagster as dg
import pandas as pd

from dsc_assets.lib.tables import preview
from resources.hashing import content_hash
from resources.llm import Generation


@dataclass
class Sample:
    """One generated text in the self-critique chain."""

    task: str
    prompt_id: str
    split: str
    step: int  # 0 for drafts; k for the k-th critique/revision
    kind: str  # draft | critique | revision
    prompt: str
    source: str  # the text this one reacts to: '' for drafts, the critiqued or revised response otherwise
    critique: str  # for revisions: the critique they follow; '' otherwise
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool
    cache_key: str

    @classmethod
    def from_generation(
        cls, base: dict, kind: str, step: int, source: str, critique: str, generation: Generation
    ) -> "Sample":
        return cls(
            task=base["task"],
            prompt_id=base["prompt_id"],
            split=base["split"],
            step=step,
            kind=kind,
            prompt=base["prompt"],
            source=source,
            critique=critique,
            text=generation.text,
            finish_reason=generation.finish_reason,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            seconds=generation.seconds,
            cached=generation.cached,
            cache_key=generation.key,
        )


SAMPLE_COLUMNS = [f.name for f in fields(Sample)]
# Columns that differ between identical reruns (timing, cache state): not part of the data version.
VOLATILE_COLUMNS = {"seconds", "cached"}


def samples_frame(samples: list[Sample]) -> pd.DataFrame:
    return pd.DataFrame([asdict(s) for s in samples], columns=SAMPLE_COLUMNS)


def data_version(df: pd.DataFrame) -> dg.DataVersion:
    stable = df[[c for c in df.columns if c not in VOLATILE_COLUMNS]]
    return dg.DataVersion(content_hash(stable, length=32))


def generation_metadata(df: pd.DataFrame) -> dict:
    """What a person checks first on a generation asset: size, tokens, speed, cache use, a few samples."""
    fresh = df[~df["cached"]] if len(df) else df
    seconds = float(fresh["seconds"].sum()) if len(fresh) else 0.0
    completion = int(fresh["completion_tokens"].sum()) if len(fresh) else 0
    return {
        "model_calls": dg.MetadataValue.int(len(fresh)),
        "cache_hits": dg.MetadataValue.int(int(df["cached"].sum()) if len(df) else 0),
        "prompt_tokens": dg.MetadataValue.int(int(df["prompt_tokens"].sum()) if len(df) else 0),
        "completion_tokens": dg.MetadataValue.int(int(df["completion_tokens"].sum()) if len(df) else 0),
        "tokens_per_s": dg.MetadataValue.float(round(completion / seconds, 2) if seconds else 0.0),
        "empty_texts": dg.MetadataValue.int(int((df["text"].str.strip() == "").sum()) if len(df) else 0),
        "truncated": dg.MetadataValue.int(int((df["finish_reason"] == "length").sum()) if len(df) else 0),
        "preview": preview(df, ["prompt_id", "step", "prompt", "text"]),
    }
