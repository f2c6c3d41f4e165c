"""Profiles: which models and how much data, as configuration (``profiles/<name>.yaml``), never as code forks.

``DSC_PROFILE`` picks the profile (default ``default``); ``DSC_HOME`` is where tables, the call cache and
assembled models live (default ``.dsc`` in the project folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resources.llm import LlamaCppLLM, LLMResource, OpenAICompatibleLLM
from resources.rewards import RewardModels
from resources.trainer import LoRATrainer
from resources.settings import DscSettings  # noqa: F401  (re-exported for definitions)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILE_ENV, HOME_ENV = "DSC_PROFILE", "DSC_HOME"


class GeneratorProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: str = "smollm2-135m"
    n_ctx: int = 2048
    n_threads: int = 0
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 3


class LocalModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m"
    n_ctx: int = 2048
    n_threads: int = 0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generator: GeneratorProfile = Field(default_factory=GeneratorProfile)
    judge: LocalModelProfile = Field(default_factory=LocalModelProfile, description="LLM judge and DLMA self-reward.")
    student: LocalModelProfile = Field(default_factory=LocalModelProfile, description="The model distilled into.")
    trainer: dict = Field(default_factory=dict, description="LoRATrainer settings (epochs, max_steps, lora_r, ...).")
    max_prompts_per_task: int | None = Field(None, ge=1)
    max_eval_prompts_per_task: int | None = Field(None, ge=0)
    max_tokens_cap: int | None = Field(None, ge=1)
    quality_overrides: dict[str, float] = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=list)


def profile_name() -> str:
    return os.environ.get(PROFILE_ENV) or "default"


def dsc_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".dsc").expanduser().resolve()


def load_profile(name: str | None = None) -> Profile:
    name = name or profile_name()
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROJECT_ROOT / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (PROJECT_ROOT / "profiles").glob("*.yaml"))
        raise ValueError(f"profile '{name}' not found at {path} (known: {', '.join(known)})")
    try:
        return Profile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: invalid profile: {error}") from None


def build_generator(profile: Profile, home: Path) -> LLMResource:
    gen = profile.generator
    cache = str(home / "cache.duckdb")
    if gen.backend == "openai":
        if not gen.base_url:
            raise ValueError("profile generator.backend is 'openai' but generator.base_url is not set")
        api_key = dg.EnvVar(gen.api_key_env) if gen.api_key_env and os.environ.get(gen.api_key_env) else ""
        return OpenAICompatibleLLM(
            cache_path=cache, base_url=gen.base_url, model=gen.model, api_key=api_key,
            timeout_s=gen.timeout_s, max_retries=gen.max_retries,
        )
    return LlamaCppLLM(
        cache_path=cache, model=gen.model, model_cache_dir=str(home / "models"), n_ctx=gen.n_ctx,
        n_threads=gen.n_threads,
    )


def build_rewards(profile: Profile, home: Path) -> RewardModels:
    judge = profile.judge
    return RewardModels(cache_path=str(home / "cache.duckdb"), judge_model=judge.model,
                        model_cache_dir=str(home / "models"), n_ctx=judge.n_ctx, n_threads=judge.n_threads)


def build_student(profile: Profile, home: Path) -> LlamaCppLLM:
    student = profile.student
    return LlamaCppLLM(cache_path=str(home / "cache.duckdb"), model=student.model, model_cache_dir=str(home / "models"),
                       n_ctx=student.n_ctx, n_threads=student.n_threads)


def build_trainer(profile: Profile, home: Path) -> LoRATrainer:
    try:
        return LoRATrainer(base_model=profile.student.model, model_cache_dir=str(home / "models"), **profile.trainer)
    except Exception as error:  # pydantic names the bad key; say where it came from
        raise ValueError(f"profile 'trainer' settings are invalid: {error}") from None
