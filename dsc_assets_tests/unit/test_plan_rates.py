"""The training rate `dsc plan` charges per optimizer step, from the summaries of checkpoints this home trained."""

from __future__ import annotations

import json

from dsc_assets.build.cost import _seconds_per_step


def _summary(root, kind: str, task: str, **data) -> None:
    folder = root / kind / task / "v1"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))


def test_the_median_step_is_the_rate_where_a_summary_has_one_not_a_whole_call_that_sat_paused(tmp_path):
    _summary(tmp_path, "reward_model", "safety", steps=100, seconds=4744.0, step_seconds=12.5, precision="float32")
    _summary(tmp_path, "sft", "safety", steps=10, seconds=80.0)  # trained before step_seconds was recorded
    rates = _seconds_per_step(tmp_path)
    assert rates[("reward_model", "float32")] == 12.5 and rates[("sft", "float32")] == 8.0
    assert rates[("", "")] == (1250.0 + 80.0) / 110
    # a kind not trained yet is charged like its family: DPO like the reward model (pairs), the placebo like SFT
    assert rates[("family:pair", "float32")] == 12.5 and rates[("family:sequence", "float32")] == 8.0
    assert _seconds_per_step(tmp_path / "absent") == {}
