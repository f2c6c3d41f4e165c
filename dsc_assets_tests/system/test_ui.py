"""The Dagster UI in a real browser (Debian's chromium driven by Playwright): `dagster dev` on 127.0.0.1, the data
assets of one partition materialized with the Materialize button, a backfill of two more launched from the same
dialog; every run succeeds and the metadata a person looks at (preview table, reward histogram) is on the page.

Skipped when chromium or playwright is missing, except under CI (``CI`` set), where that is a failure: the install
step must provide them (`apt-get install -y chromium`, `pip install playwright`).
"""

from __future__ import annotations

import os
import shutil
import time

import dagster as dg
import pytest

from dsc_assets_tests.conftest import dagster_dev, private_tasks

TASKS = ["privacy", "sentiment", "sycophancy"]


def _browser_or_skip():
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium and sync_playwright:
        return chromium, sync_playwright
    reason = "needs Debian's chromium (apt-get install -y chromium) and playwright (pip install playwright)"
    if os.environ.get("CI"):
        pytest.fail(f"the UI test cannot run in CI: it {reason}")
    pytest.skip(reason)


def _materialize_group(page, port: int, group: str, partitions: list[str]) -> None:
    """The group's Materialize all button, the partitions picked in its dialog, then Launch."""
    page.goto(f"http://127.0.0.1:{port}/locations/dsc/asset-groups/{group}")
    materialize = page.get_by_role("button", name="Materialize all")
    materialize.wait_for(timeout=60_000)
    try:  # Dagster's first-visit newsletter dialog
        page.get_by_role("button", name="Skip").click(timeout=5_000)
    except Exception:  # noqa: BLE001  not shown (already dismissed in this browser)
        pass
    materialize.click(timeout=30_000)
    try:  # "upstream assets have not been materialized yet": they are queued before this run
        page.get_by_role("button", name="Confirm").click(timeout=5_000)
    except Exception:  # noqa: BLE001  no such warning
        pass
    page.get_by_text("Select a partition or create one").click(timeout=30_000)
    for partition in partitions:
        page.get_by_role("menuitem", name=partition).first.click()
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    launch = f"Launch {len(partitions)} run" if len(partitions) == 1 else "Launch backfill"
    page.get_by_role("button", name=launch).click(timeout=30_000)
    page.wait_for_timeout(3000)


def _wait_for_runs(instance: dg.DagsterInstance, count: int, timeout: float = 600) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if len(runs) >= count and all(r.is_finished for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(
        f"runs did not finish: {[(r.tags.get('dagster/partition'), r.status) for r in instance.get_runs()]}"
    )


def test_materialize_button_and_backfill_in_a_real_browser(tmp_path):
    chromium, sync_playwright = _browser_or_skip()
    root = private_tasks(tmp_path / "prompts", {task: 2 for task in TASKS})
    env = {
        **os.environ,
        "DSC_PROFILE": "test",
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    with dagster_dev(env) as port:
        with sync_playwright() as playwright, dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                # One partition with the Materialize button: its chain, then its rewards (the queue runs them in order).
                # Each dialog opens once the run before it has finished: while a run changes partition statuses, the
                # dialog's partition list re-renders under the pointer (a click then hits a detached menu item).
                _materialize_group(page, port, "generation", ["sentiment"])
                _wait_for_runs(instance, 1)
                _materialize_group(page, port, "rewards", ["sentiment"])
                _wait_for_runs(instance, 2)
                # A backfill of two more partitions from the same dialog.
                _materialize_group(page, port, "generation", ["privacy", "sycophancy"])
                runs = _wait_for_runs(instance, 4)
                assert sorted((r.tags.get("dagster/partition"), r.status.value) for r in runs) == [
                    ("privacy", "SUCCESS"),
                    ("sentiment", "SUCCESS"),
                    ("sentiment", "SUCCESS"),
                    ("sycophancy", "SUCCESS"),
                ]

                page.goto(f"http://127.0.0.1:{port}/assets/reward_scores?view=events&partition=sentiment")
                # the event's metadata renders piece by piece: wait for each (counting right after the histogram
                # appeared once found the preview table not yet drawn, CI at ff1dc17)
                for text in ("histogram", "preview", "prompt_id"):
                    page.get_by_text(text).first.wait_for(timeout=60_000)
                page.goto(f"http://127.0.0.1:{port}/assets/drafts?view=events&partition=sycophancy")
                page.get_by_text("preview").first.wait_for(timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))  # what the browser showed
                print(f"screenshot: {tmp_path / 'failure.png'}")
                raise
            browser.close()
