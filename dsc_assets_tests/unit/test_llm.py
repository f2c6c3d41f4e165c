"""The embedded llama.cpp backend with the real SmolLM2-135M: seeds, cache, model errors."""

from __future__ import annotations

import shutil

import pytest

from resources import models
from resources.llm import LlamaCppLLM, SamplingParams
from resources.models import ModelError, SplitModel, resolve_model

PARAMS = SamplingParams(temperature=0.9, max_tokens=24, seed=7)
QUESTIONS = ["Name a fruit.", "Write one sentence about the sea.", "What is 2 + 3?"]


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": question}]


def _llm(tmp_path, name: str) -> LlamaCppLLM:
    return LlamaCppLLM(
        cache_path=str(tmp_path / f"{name}.duckdb"),
        model="smollm2-135m",
        model_cache_dir=str(tmp_path / "models"),
        n_ctx=512,
    )


def test_same_seed_same_text_whatever_ran_before(tmp_path):
    first, second = _llm(tmp_path, "a"), _llm(tmp_path, "b")  # separate caches: both really generate
    forward = [first.chat(_messages(q), PARAMS).text for q in QUESTIONS]
    backward = [second.chat(_messages(q), PARAMS).text for q in reversed(QUESTIONS)][::-1]
    assert forward == backward
    assert all(text.strip() for text in forward)
    assert first.calls_made == len(QUESTIONS) and second.calls_made == len(QUESTIONS)


def test_other_seed_samples_other_text(tmp_path):
    llm = _llm(tmp_path, "a")
    seeds = {
        llm.chat(_messages("Tell me a short story about a cat."), PARAMS.model_copy(update={"seed": s})).text
        for s in range(4)
    }
    assert len(seeds) > 1


def test_second_run_makes_zero_model_calls(tmp_path):
    llm = _llm(tmp_path, "cache")
    first = llm.chat_many([_messages(q) for q in QUESTIONS], PARAMS)
    assert llm.calls_made == 3 and llm.cache.count() == 3

    rerun = _llm(tmp_path, "cache")  # a new resource on the same cache, as in a new run
    again = rerun.chat_many([_messages(q) for q in QUESTIONS], PARAMS)
    assert rerun.calls_made == 0 and rerun.cache_hits == 3
    assert [g.text for g in again] == [g.text for g in first]
    assert all(g.cached for g in again)

    # Anything that changes the request is a new key: one more call, not three.
    rerun.chat_many([_messages(q) for q in QUESTIONS] + [_messages("A new question?")], PARAMS)
    assert rerun.calls_made == 1 and rerun.cache.count() == 4


def test_missing_model_file_is_a_clear_error(tmp_path):
    llm = LlamaCppLLM(cache_path=str(tmp_path / "c.duckdb"), model=str(tmp_path / "nowhere.gguf"))
    with pytest.raises(ModelError, match="neither a known model name .* nor an existing .gguf file"):
        llm.chat(_messages("hi"), PARAMS)


def test_wrong_sha_is_a_clear_error(tmp_path):
    packaged = resolve_model("smollm2-135m", tmp_path)
    copy = tmp_path / "student.gguf"
    shutil.copy(packaged.path, copy)
    llm = LlamaCppLLM(cache_path=str(tmp_path / "c.duckdb"), model=str(copy), model_sha256="0" * 64)
    with pytest.raises(ModelError, match=r"has sha256 b179c9523d0e.*expected 000000000000.*corrupt"):
        llm.chat(_messages("hi"), PARAMS)


def test_truncated_or_foreign_file_is_a_clear_error(tmp_path):
    packaged = resolve_model("smollm2-135m", tmp_path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(packaged.path.read_bytes()[: 1 << 20])
    with pytest.raises(ModelError, match="llama.cpp could not load"):
        LlamaCppLLM(cache_path=str(tmp_path / "c.duckdb"), model=str(truncated)).chat(_messages("hi"), PARAMS)
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("not a model")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        LlamaCppLLM(cache_path=str(tmp_path / "c.duckdb"), model=str(foreign)).chat(_messages("hi"), PARAMS)


def test_split_model_with_missing_parts_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(
        models.KNOWN_MODELS,
        "absent-model",
        SplitModel(
            package_pattern="dsc_absent_part{n}",
            distribution_pattern="dsc-absent-part{n}",
            parts=2,
            filename="absent.gguf",
            sha256="0" * 64,
            chat_format="chatml",
            install_hint="pip install -e '.[teacher]'",
        ),
    )
    with pytest.raises(
        ModelError, match=r"'absent-model' is not installed: missing package\(s\) dsc-absent-part1.*\.\[teacher\]"
    ):
        resolve_model("absent-model", tmp_path)


def test_split_model_is_assembled_once_and_verified(tmp_path, monkeypatch):
    """Split the real student file into two fake 'packages' on sys.path; assembly must reproduce its sha."""
    packaged = resolve_model("smollm2-135m", tmp_path)
    data = packaged.path.read_bytes()
    site = tmp_path / "site"
    for n, chunk in enumerate((data[: len(data) // 2], data[len(data) // 2 :]), start=1):
        folder = site / f"dsc_split_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{n:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    spec = dict(
        package_pattern="dsc_split_part{n}",
        distribution_pattern="dsc-split-part{n}",
        parts=2,
        filename="split.gguf",
        chat_format="chatml",
        install_hint="reinstall",
    )
    monkeypatch.setitem(models.KNOWN_MODELS, "split-ok", SplitModel(sha256=packaged.sha256, **spec))
    assembled = resolve_model("split-ok", tmp_path / "cache")
    assert assembled.sha256 == packaged.sha256 and assembled.path.read_bytes() == data

    monkeypatch.setitem(
        models.KNOWN_MODELS, "split-bad", SplitModel(sha256="f" * 64, **{**spec, "filename": "bad.gguf"})
    )
    with pytest.raises(ModelError, match="assembled parts have sha256 .* expected ffffffffffff"):
        resolve_model("split-bad", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("bad.gguf*")), "a failed assembly must leave no file behind"
