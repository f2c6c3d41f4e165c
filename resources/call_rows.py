"""One model call as a row of the call cache's ``calls`` table, the same in every store, and the rate `dsc plan` reads from
those rows."""

from __future__ import annotations

import json
import time
from typing import Any


def call_row(key: str, kind: str, model: str, request: Any, response: dict[str, Any], seconds: float) -> tuple:
    """One call as the calls table's row (key, kind, model, request and response as JSON, seconds, created_at): the
    same serialization in every cache, so their rows compare equal."""
    request_json = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return (key, kind, model, request_json, json.dumps(response, ensure_ascii=False), seconds, time.time())


def seconds_query(model: str | None, kind: str | None, placeholder: str) -> tuple[str, list]:
    """The SQL of a cache's mean seconds per call (``placeholder``: DuckDB's or PostgreSQL's), what `dsc plan` charges
    a call. A scorer that takes no measurable time (VADER: 0.0 s) has a rate of 0, not an unknown one. Left out beside
    measured rows: rows at 0.0 s (judge scores cached before scores recorded their time), and rows over 20x the mean,
    the calls during which the run sat paused or asleep (one 15-minute pause among 115 judge scores made the judge's
    mean 10.9 s for a typical 4.4). Not the median: a judge's score records the time since the previous one, so the
    first verdict of a wave carries the wave (median 0.02 s, 90th percentile 21 s)."""
    filters = []
    if model:
        filters.append(
            (f"model LIKE {placeholder}", model[:-1] + "%")
            if model.endswith("*")
            else (f"model = {placeholder}", model)
        )
    if kind:
        filters.append((f"kind = {placeholder}", kind))
    where = " AND ".join(f for f, _ in filters) or "true"
    sql = (
        f"WITH measured AS (SELECT seconds FROM calls WHERE {where}), "
        "typical AS (SELECT avg(seconds) AS m FROM measured WHERE seconds > 0) "
        "SELECT coalesce(avg(seconds) FILTER (WHERE seconds > 0 AND seconds <= 20 * m), avg(seconds)) "
        "FROM measured, typical"
    )
    return sql, [v for _, v in filters]
