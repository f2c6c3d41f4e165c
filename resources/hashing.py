"""One function for content hashes, used for cache keys, data versions and code versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd


def _canonical(obj: Any) -> Any:
    if isinstance(obj, pd.DataFrame):
        # Column order is part of the content; row values go through JSON so dtypes do not leak in.
        return {"columns": list(map(str, obj.columns)), "rows": json.loads(obj.to_json(orient="values"))}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def content_hash(*parts: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of ``parts`` (dicts sorted, DataFrames by value), hex, cut to ``length``."""
    payload = json.dumps([_canonical(p) for p in parts], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: str, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def call_key(kind: str, identity: str, *request: Any) -> str:
    """The call cache's key: what was asked (``kind``: chat, score, logprob; the request's parts) of which model or
    scorer (``identity``: a GGUF's sha256, a scorer with its options). The only formula for cache keys: the LLM,
    the scorers and `dsc plan`'s cost replay all call it."""
    return content_hash(kind, identity, *request)
