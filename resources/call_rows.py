"""One model call as a row of the call cache's ``calls`` table, the same in every store."""

from __future__ import annotations

import json
import time
from typing import Any


def call_row(key: str, kind: str, model: str, request: Any, response: dict[str, Any], seconds: float) -> tuple:
    """One call as the calls table's row (key, kind, model, request and response as JSON, seconds, created_at): the
    same serialization in every cache, so their rows compare equal."""
    request_json = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return (key, kind, model, request_json, json.dumps(response, ensure_ascii=False), seconds, time.time())
