"""Profiles: which models and how much data, as configuration (``profiles/<name>.yaml``), never as code forks.

``DSC_PROFILE`` picks the profile (default ``default``); ``DSC_HOME`` is where tables, the call cache and
assembled models live (default ``.dsc`` in the project folder).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, with_config
from typing_extensions import TypedDict

from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets.lib.quality import QualityRules
from dsc_assets.lib.task_spec import Scorer
from dsc_assets.lib.yaml_files import read_mapping
from resources.hashing import content_hash
from resources.llm import LlamaCppLLM, LLMResource
from resources.openai_llm import Endpoint, OpenAICompatibleLLM
from resources.rewards import RewardModels
from resources.settings import DEFAULT_METHODS, METHODS
from resources.trainer import LoRATrainer

PROFILE_ENV, HOME_ENV = "DSC_PROFILE", "DSC_HOME"
# The shared deployment's PostgreSQL databases, over the profile's ``shared`` section (docs/scale-out.md).
CACHE_URL_ENV, INSTANCE_URL_ENV, WAREHOUSE_URL_ENV = "DSC_CACHE_URL", "DSC_INSTANCE_URL", "DSC_WAREHOUSE_URL"


class ProfileError(ValueError):
    """A profile file is malformed. Like a task file's errors, the message names the file, the field and the fix."""


# Context windows below this cannot hold a chat template, a prompt and an answer; above, llama.cpp's own limit.
N_CTX = {"ge": 256, "le": 131072}


class EndpointProfile(BaseModel):
    """One server of a generator pool."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1)
    max_concurrency: int | None = Field(None, ge=1, le=256, description="Unset: generator.max_concurrency.")


class GeneratorProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: str = Field("smollm2-135m", min_length=1)
    n_ctx: int = Field(2048, **N_CTX)
    n_threads: int = Field(0, ge=0, le=1024, description="0: all cores.")
    base_url: str | None = None
    endpoints: list[EndpointProfile] | None = Field(
        None, min_length=1, description="openai: several servers of the same model, instead of base_url."
    )
    identity_base_url: str | None = Field(None, description="openai pool: keep this former base_url's cache keys.")
    model_revision: str = Field("", description="openai: bump when the weights change under the same model name.")
    reprobe_s: float = Field(30.0, ge=0, description="openai pool: seconds before a failed endpoint is asked again.")
    api_key_env: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    batch_size: int = Field(8, ge=1, le=64, description="llama_cpp: answers decoded together in one context.")
    max_concurrency: int = Field(1, ge=1, le=256, description="openai: requests in flight at once.")


class LocalModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", min_length=1)
    n_ctx: int = Field(2048, **N_CTX)
    n_threads: int = Field(0, ge=0, le=1024)
    batch_size: int = Field(8, ge=1, le=64, description="Sequences decoded or scored together in one context.")


def _postgres_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL (its password in PGPASSWORD or ~/.pgpass, not in the profile)")
    return value


class SharedProfile(BaseModel):
    """The shared deployment: state that several machines' runs share, on PostgreSQL (unset: the embedded files)."""

    model_config = ConfigDict(extra="forbid")

    cache_url: Annotated[str | None, AfterValidator(_postgres_url)] = Field(
        None, description="The call cache's database (DSC_CACHE_URL overrides it); unset: $DSC_HOME/cache.duckdb."
    )
    instance_url: Annotated[str | None, AfterValidator(_postgres_url)] = Field(
        None, description="The Dagster instance's database (DSC_INSTANCE_URL overrides it); unset: SQLite."
    )
    warehouse_url: Annotated[str | None, AfterValidator(_postgres_url)] = Field(
        None,
        description="The warehouse's database, one table per asset (DSC_WAREHOUSE_URL overrides it); unset: "
        "$DSC_HOME/warehouse.duckdb.",
    )


def _quality_overrides_type():
    """``quality_overrides`` keys: every QualityRules threshold with its own range, plus the acceptance band.
    A plain dict when valid (the settings resource takes a dict); a typo or an out-of-range value fails."""
    fields = {
        name: Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        for name, info in QualityRules.model_fields.items()
    }
    rate = Annotated[float, Field(ge=0.0, le=1.0)]
    fields.update(min_acceptance_rate=rate, max_acceptance_rate=rate)
    return with_config(ConfigDict(extra="forbid"))(TypedDict("QualityOverrides", fields, total=False))


QualityOverrides = _quality_overrides_type()

# Ranges of the trainer settings a profile may set (LoRATrainer declares the types; a typo'd key or a zero batch
# would otherwise pass silently and fail, or train nothing, after the whole data chain ran).
TRAINER_RANGES = {
    "lora_r": Field(ge=1),
    "lora_alpha": Field(ge=1),
    "lora_dropout": Field(ge=0.0, lt=1.0),
    "learning_rate": Field(gt=0.0, le=1.0),
    "epochs": Field(gt=0.0),
    "max_steps": Field(ge=-1),
    "per_device_batch_size": Field(ge=1),
    "grad_accum": Field(ge=1),
    "max_length": Field(ge=16),
    "dpo_beta": Field(gt=0.0),
    "rdpo_tau": Field(gt=0.0),
    "dlma_gamma": Field(ge=0.0),
    "logging_steps": Field(ge=1),
}


def _trainer_settings_type():
    fields = {}
    for name, info in LoRATrainer.model_fields.items():
        if name in ("base_model", "model_cache_dir"):  # set from the profile's student and DSC_HOME
            continue
        metadata = list(info.metadata) + ([TRAINER_RANGES[name]] if name in TRAINER_RANGES else [])
        fields[name] = Annotated[(info.annotation, *metadata)] if metadata else info.annotation
    return with_config(ConfigDict(extra="forbid"))(TypedDict("TrainerSettings", fields, total=False))


TrainerSettings = _trainer_settings_type()


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generator: GeneratorProfile = Field(default_factory=GeneratorProfile)
    judge: LocalModelProfile = Field(default_factory=LocalModelProfile, description="LLM judge and DLMA self-reward.")
    student: LocalModelProfile = Field(default_factory=LocalModelProfile, description="The model distilled into.")
    trainer: TrainerSettings = Field(
        default_factory=dict, description="LoRATrainer settings (epochs, max_steps, lora_r, ...)."
    )
    max_prompts_per_task: int | None = Field(None, ge=1)
    max_eval_prompts_per_task: int | None = Field(None, ge=0)
    eval_split: Literal["test", "dev"] = Field(
        "test", description="The split the evaluation answers: test (the study's, ledgered) or dev (for tuning)."
    )
    eval_samples_per_prompt: int = Field(1, ge=1, le=16)
    max_tokens_cap: int | None = Field(None, ge=1)
    methods: list[Literal[METHODS]] = Field(
        default_factory=lambda: list(DEFAULT_METHODS),
        min_length=1,
        description="Methods to build (default: all but the placebo control). dSC's data (drafts, critiques, "
        "revisions) is built whenever one of sft, dpo, rdpo, placebo is on; dlma and almost are whole branches of "
        "teacher calls; placebo is SFT on the unrevised drafts (one more training).",
    )
    training_seeds: int = Field(
        1, ge=1, le=10, description="Trainings of each seeded checkpoint (sft, dpo, rdpo, dlma, almost_sft, placebo)."
    )
    training_seeds_by_task: dict[str, Annotated[int, Field(ge=1, le=10)]] = Field(
        default_factory=dict, description="training_seeds for some tasks, e.g. {sentiment: 3, privacy: 3}."
    )
    second_scorers: dict[str, Scorer] = Field(
        default_factory=dict,
        description="The evaluation's second reward for some tasks, in place of task.yaml's second_scorer (read by the "
        "evaluation alone), e.g. {safety: {name: judge, options: {model: qwen2.5-coder-0.5b, ...}}}: a scorer on a "
        "model the teacher extra installs, which a task file cannot ask of every install.",
    )
    quality_overrides: QualityOverrides = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=list)
    shared: SharedProfile = Field(default_factory=SharedProfile)
    _name: str = PrivateAttr("")  # the file it was loaded from, by stem ("" when built in code)

    @property
    def name(self) -> str:
        return self._name

    def sha(self) -> str:
        """The validated settings by content (comments and key order do not count): what the ledger records."""
        return content_hash("profile", self.model_dump(mode="json"), length=16)


def profile_name() -> str:
    return os.environ.get(PROFILE_ENV) or "default"


def dsc_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".dsc").expanduser().resolve()


class HomeError(ValueError):
    """DSC_HOME (or DAGSTER_HOME) cannot hold what a run writes: the message names it, why, and the fix."""


def usable_home(path: Path, variable: str = HOME_ENV) -> Path:
    """``path`` as a folder this process can write (created if missing), or HomeError saying what is wrong."""
    fix = f"set {variable} to a folder you can write, e.g. {variable}=$HOME/.dsc"
    if path.exists() and not path.is_dir():
        raise HomeError(f"{variable}={path} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dsc-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise HomeError(f"{variable}={path} is not a writable folder ({error.strerror or error}); {fix}") from None
    return path


def profile_file(name: str | None = None) -> Path:
    """The YAML file of a profile name (``test``) or path (``my.yaml``)."""
    name = name or profile_name()
    return Path(name) if name.endswith((".yaml", ".yml")) else PROJECT_ROOT / "profiles" / f"{name}.yaml"


def load_profile(name: str | None = None) -> Profile:
    name = name or profile_name()
    path = profile_file(name)
    if not path.is_file():
        known = sorted(p.stem for p in (PROJECT_ROOT / "profiles").glob("*.yaml"))
        raise ProfileError(f"profile '{name}' not found at {path} (known: {', '.join(known)})")
    raw = profile_mapping(path)
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as error:
        raise ProfileError(_format_profile_errors(path, error)) from None
    profile._name = path.stem
    return profile


def profile_mapping(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A profile file's settings with ``extends: <profile>`` resolved: the named profile's mapping, with this file's
    keys merged over it (mappings key by key, anything else replaced), so a variant says only what differs."""
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ProfileError(f"{path}: 'extends' forms a cycle ({chain})")
    raw = read_mapping(path, ProfileError, "generator, judge", empty={})
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ProfileError(f"{path}: field 'extends' must name a profile (got {parent!r})")
    parent_path = path.parent / parent if parent.endswith((".yaml", ".yml")) else profile_file(parent)
    if not parent_path.is_file():
        raise ProfileError(f"{path}: 'extends: {parent}' names no profile ({parent_path} not found)")
    return _merged(profile_mapping(parent_path, (*_seen, path.resolve())), raw)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _known_keys(parent: tuple) -> list[str]:
    models = {
        (): Profile,
        ("generator",): GeneratorProfile,
        ("judge",): LocalModelProfile,
        ("student",): LocalModelProfile,
        ("shared",): SharedProfile,
    }
    if parent == ("quality_overrides",):
        return list(QualityOverrides.__annotations__)
    if parent == ("trainer",):
        return list(TrainerSettings.__annotations__)
    model = models.get(tuple(str(p) for p in parent))
    return list(model.model_fields) if model else []


def _format_profile_errors(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            known = _known_keys(item["loc"][:-1])
            close = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}" if known else ""
            lines.append(f"{path}: field '{location}' is not a profile setting{hint}")
        elif item["type"] == "missing":
            lines.append(f"{path}: field '{location}' is missing")
        else:
            got = f" (got {item['input']!r})" if "input" in item and not isinstance(item["input"], (dict, list)) else ""
            lines.append(f"{path}: field '{location}' {item['msg'].removeprefix('Value error, ')}{got}")
    return "\n".join(lines)


def cache_location(profile: Profile, home: Path) -> str:
    """Where the call cache is: DSC_CACHE_URL, else the profile's ``shared.cache_url``, else the DuckDB file."""
    return os.environ.get(CACHE_URL_ENV) or profile.shared.cache_url or str(home / "cache.duckdb")


def warehouse_location(profile: Profile | None, home: Path) -> str:
    """Where the asset tables are: DSC_WAREHOUSE_URL, else the profile's ``shared.warehouse_url``, else the DuckDB
    file under the home."""
    shared = profile.shared.warehouse_url if profile else None
    return os.environ.get(WAREHOUSE_URL_ENV) or shared or str(home / "warehouse.duckdb")


def instance_url(profile: Profile | None) -> str | None:
    """The Dagster instance's PostgreSQL database, when the deployment is shared: DSC_INSTANCE_URL, else the
    profile's ``shared.instance_url``; None for the embedded SQLite instance."""
    return os.environ.get(INSTANCE_URL_ENV) or (profile.shared.instance_url if profile else None)


def build_generator(profile: Profile, home: Path) -> LLMResource:
    gen = profile.generator
    cache = cache_location(profile, home)
    if gen.backend == "openai":
        if bool(gen.base_url) == bool(gen.endpoints):
            raise ValueError(
                "profile generator.backend is 'openai': set generator.base_url (one server) or generator.endpoints "
                f"(a pool of servers of the same model), {'not both' if gen.base_url else 'neither is set'}"
            )
        if gen.identity_base_url and not gen.endpoints:
            raise ValueError("profile generator.identity_base_url applies to generator.endpoints only")
        api_key = dg.EnvVar(gen.api_key_env) if gen.api_key_env and os.environ.get(gen.api_key_env) else ""
        return OpenAICompatibleLLM(
            cache_path=cache,
            base_url=gen.base_url or "",
            endpoints=[Endpoint(**e.model_dump()) for e in gen.endpoints or []],
            identity_base_url=gen.identity_base_url or "",
            model_revision=gen.model_revision,
            reprobe_s=gen.reprobe_s,
            model=gen.model,
            api_key=api_key,
            timeout_s=gen.timeout_s,
            max_retries=gen.max_retries,
            max_concurrency=gen.max_concurrency,
        )
    return _local_llm(gen, home, cache)


def build_rewards(profile: Profile, home: Path) -> RewardModels:
    settings = _local_model_settings(profile.judge, home, cache_location(profile, home))
    return RewardModels(judge_model=settings.pop("model"), **settings)


def build_student(profile: Profile, home: Path) -> LlamaCppLLM:
    return _local_llm(profile.student, home, cache_location(profile, home))


def _local_llm(model: GeneratorProfile | LocalModelProfile, home: Path, cache: str) -> LlamaCppLLM:
    return LlamaCppLLM(**_local_model_settings(model, home, cache))


def _local_model_settings(model: GeneratorProfile | LocalModelProfile, home: Path, cache: str) -> dict:
    """A profile's embedded model: its file, context, threads and batch, with the call cache and the home's model
    folder."""
    return {
        "cache_path": cache,
        "model": model.model,
        "model_cache_dir": str(home / "models"),
        "n_ctx": model.n_ctx,
        "n_threads": model.n_threads,
        "batch_size": model.batch_size,
    }


def build_trainer(profile: Profile, home: Path) -> LoRATrainer:
    try:
        return LoRATrainer(base_model=profile.student.model, model_cache_dir=str(home / "models"), **profile.trainer)
    except Exception as error:  # pydantic names the bad key; say where it came from
        raise ValueError(f"profile 'trainer' settings are invalid: {error}") from None
