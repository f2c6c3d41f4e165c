"""The fast test layer's one fake: an LLM resource that replays a real model's recorded answers.

The recording (``recordings/<name>.jsonl``) holds what the real 135M model answered, keyed by the same content hash
the call cache uses, so a replayed run takes exactly the code path of a real one (cache misses, batching callback,
commit per row) in seconds. It answers nothing else: a request the recording lacks (an edited template, a new
prompt) is a GenerationError that says how to record again; nothing is made up.

Record again (real model, test profile, ~1 minute) after changing a prompt template, the test profile or the
model::

    .venv/bin/python -m dsc_assets_tests.recorded
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from pydantic import Field

from dsc_assets.lib.commit import git_commit
from resources.llm import Generation, GenerationError, LLMResource, Message, SamplingParams

RECORDINGS = Path(__file__).resolve().parent / "recordings"
DEFAULT = RECORDINGS / "sentiment_test_profile.jsonl"
# What the recording covers: the dSC data chain and DLMA's contrastive answers of one task on the test profile.
RECORDED_TASK = "sentiment"
RECORDED_ASSETS = ("raw_prompts", "drafts", "critiques", "revisions", "contrastive_pairs")
RERECORD = "record it again with `.venv/bin/python -m dsc_assets_tests.recorded` (real model, about a minute)"


@functools.lru_cache(maxsize=4)
def load_recording(path: str) -> tuple[dict, dict[str, dict]]:
    """(header, answers by cache key) of a recording file."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise GenerationError(f"{path}: empty recording; {RERECORD}")
    header = json.loads(lines[0])
    answers = {row["key"]: row["response"] for row in map(json.loads, lines[1:])}
    return header, answers


class RecordedLLM(LLMResource):
    """Answers from a recording of a real model (fast tests only; never part of a profile)."""

    recording: str = Field(
        default=str(DEFAULT), description="JSONL file written by `python -m dsc_assets_tests.recorded`."
    )

    def model_identity(self) -> str:
        # The recorded model's identity, so the cache keys are the ones the real model's run wrote.
        return load_recording(self.recording)[0]["model_identity"]

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        header, answers = load_recording(self.recording)
        key = self.request_key(messages, params)
        response = answers.get(key)
        if response is None:
            asked = str(messages[-1].get("content", ""))[:80].replace("\n", " ")
            raise GenerationError(
                f"{self.recording}: no recorded answer for request {key[:12]} ('{asked}...'); the recording was made "
                f"at commit {header.get('commit', '?')} and covers {', '.join(header.get('assets', []))}: {RERECORD}"
            )
        return Generation(**response, key=key)


def record(out: Path) -> int:
    """Run the recorded assets with the real model on the test profile in a scratch DSC_HOME; write every chat call
    the cache holds afterwards. Returns the number of answers written."""
    import dagster as dg
    import duckdb

    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile
    from resources import stores

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        os.environ["DAGSTER_HOME"] = scratch
        defs = build_definitions(load_profile("test"), home)
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key=RECORDED_TASK,
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=[dg.AssetKey(name) for name in RECORDED_ASSETS],
        )
        if not result.success:
            raise SystemExit("recording run failed; nothing written")
        identity = defs.resources["llm"].model_identity()
        stores.close_all()
        with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
            rows = con.execute(
                "SELECT key, response FROM calls WHERE kind = 'chat' AND model = ? ORDER BY key", [identity]
            ).fetchall()
    header = {
        "model_identity": identity,
        "profile": "test",
        "task": RECORDED_TASK,
        "assets": list(RECORDED_ASSETS),
        "commit": git_commit(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(header)
        + "\n"
        + "".join(
            json.dumps({"key": key, "response": json.loads(response)}, ensure_ascii=False, sort_keys=True) + "\n"
            for key, response in rows
        )
    )
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    written = record(args.out)
    print(f"{args.out}: {written} recorded answers", file=sys.stderr)


if __name__ == "__main__":
    main()
