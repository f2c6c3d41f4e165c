"""LoRA distillation into the student over transformers + TRL + PEFT, and export back to GGUF for llama.cpp.

The student is read from its GGUF once (transformers dequantizes it) and saved as a plain Hugging Face folder keyed
by the GGUF's sha256; later loads take a fraction of a second. SFT uses TRL's SFTTrainer; DPO, rDPO and DLMA use a
DPOTrainer subclass whose loss reads a per-pair soft label (rDPO) or self-reward margin (DLMA) from the batch,
since TRL 1.16's DPOTrainer has no loss hook.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.checkpoints import Checkpoint, train_or_reuse
from resources.dpo import dpo_trainer_class
from resources.export import export_merged_gguf
from resources.hf import hf_student, quiet_progress
from resources.models import resolve_model
from resources.train_result import TrainResult, step_seconds, step_timer

LossName = Literal["dpo", "rdpo", "dlma"]


# The settings only some trainings read; every other setting (LoRA, optimizer, lengths, device) is read by all.
# A checkpoint's identity (its folder, its staleness) is the common settings and its own.
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "sft": ("sft_completion_only",),
    "placebo": ("sft_completion_only",),
    "almost_sft": ("sft_completion_only",),
    "dpo": ("dpo_beta", "dpo_sft_weight", "dpo_learning_rate"),
    "rdpo": ("dpo_beta", "rdpo_tau", "dpo_sft_weight", "dpo_learning_rate"),
    "dlma": ("dpo_beta", "dlma_gamma", "dpo_sft_weight", "dpo_learning_rate"),
    "reward_model": (),
    "almost_rl": ("rl_beta", "rl_num_generations", "rl_max_completion_length"),
}
# The untrained base through the export path (the evaluation's `base`) reads only which tensors are written in F16.
EXPORT_SETTINGS = ("base_model", "target_modules")
# How the same numbers are computed (up to rounding): not part of a checkpoint's identity.
COMPUTE_ONLY = ("dpo_precompute_ref", "dpo_fused_head", "save_every_steps")
_METHOD_SPECIFIC = {name for names in METHOD_SETTINGS.values() for name in names}


class LoRATrainer(dg.ConfigurableResource):
    """LoRA fine-tuning of the student (SFT for dSC; DPO, rDPO, DLMA) and export of the merged model to GGUF.
    CPU by default; ``device: cuda`` and ``dtype: bfloat16`` run the same code on a GPU (bench/gpu_training.py checks
    every training there)."""

    base_model: str = Field(default="smollm2-135m", description="Student: known model name or .gguf path.")
    model_cache_dir: str = Field(default=".dsc/models", description="Where the HF copy of the student is kept.")
    device: str = Field(default="auto", description="cpu, cuda or auto.")
    dtype: str = Field(
        default="float32",
        description=(
            "float32; bf16-mixed (bf16 autocast, float32 weights); bfloat16 or float16 (weights stored so); auto "
            "(bf16-mixed where the hardware has bf16 units and they measure faster, else float32: "
            "resources/precision.py)."
        ),
    )
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: float = 2e-4
    epochs: float = 4.0
    max_steps: int = Field(default=-1, description="Stop after this many optimizer steps (-1: run the epochs).")
    per_device_batch_size: int = 2
    grad_accum: int = 2
    max_length: int = 512
    seed: int = 0
    dpo_beta: float = 0.1
    dpo_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description=(
            "DPO, rDPO and DLMA: their learning rate (None: learning_rate). Preference losses usually want a smaller one "
            "than SFT: the privacy study's DPO at SFT's 2e-4 traded the story's facts for its reward."
        ),
    )
    dpo_sft_weight: float = Field(
        default=0.0,
        ge=0.0,
        description=(
            "DPO, rDPO and DLMA: weight of an added SFT loss on the chosen answer (mean NLL per token; RPO, Pang et al. "
            "2024). Keeps the chosen answers likely, so the preference term cannot win by making every answer short."
        ),
    )
    rdpo_tau: float = Field(default=1.0, description="Temperature of rDPO's soft label σ((s_c − s_r)/τ).")
    dlma_gamma: float = 0.2
    logging_steps: int = 1
    sft_completion_only: bool = Field(default=True, description="SFT loss on the assistant's answer only.")
    rl_beta: float = Field(default=0.05, description="ALMoST RL: KL penalty towards the SFT policy (RLOO's beta).")
    rl_num_generations: int = Field(default=4, ge=2, description="ALMoST RL: samples per prompt (RLOO's k).")
    rl_max_completion_length: int = Field(default=64, ge=8, description="ALMoST RL: tokens per sampled answer.")
    save_every_steps: int = Field(
        default=16,
        ge=0,
        description=(
            "Keep the training's state (adapter, optimizer, scheduler, random generators) every this many optimizer "
            "steps, so a killed run resumes from there instead of from nothing (0: never). The study's ALMoST RL is "
            "256 steps of ~25 s on 2 cores."
        ),
    )

    dpo_precompute_ref: bool = Field(
        default=True,
        description=(
            "DPO, rDPO and DLMA: the frozen reference's log-probabilities computed once per dataset (TRL's "
            "precompute_ref_log_probs) instead of in every step of every epoch. The same numbers up to rounding."
        ),
    )

    dpo_fused_head: bool = Field(
        default=False,
        description=(
            "DPO, rDPO and DLMA: log-probabilities through TRL's fused LM head (only the answer's positions "
            "projected, in tiles) instead of full logits and a log-softmax. Same numbers; measured slower on a 2-core "
            "CPU (7.40 vs 6.08 s per step, bench/precision.py), so off; it saves memory on long answers and big "
            "vocabularies."
        ),
    )

    _base: Path | None = PrivateAttr(default=None)
    _precision: tuple[str, str] | None = PrivateAttr(default=None)

    def precision(self) -> tuple[str, str]:
        """(the dtype trainings run in, why): ``dtype`` with ``auto`` decided for this machine."""
        if self._precision is None:
            from resources.precision import resolve

            self._precision = resolve(self.dtype, self.device, Path(self.model_cache_dir))
        return self._precision

    def _weights_dtype(self):
        import torch

        resolved = self.precision()[0]
        return torch.float32 if resolved == "bf16-mixed" else getattr(torch, resolved)

    def method_settings(self, method: str | None = None) -> dict[str, Any]:
        """Everything that decides a checkpoint besides its data. Where the student's HF copy is kept decides nothing:
        moving DSC_HOME must not retrain. With ``method``, the settings only other trainings read are left out
        (``METHOD_SETTINGS``): a new ``dpo_beta`` retrains DPO, not SFT; ``export`` is the untrained base's."""
        settings = self.model_dump(mode="json", exclude={"model_cache_dir", *COMPUTE_ONLY})
        settings["dtype"] = self.precision()[0]  # auto is not a number: what it resolved to on this machine is
        if method == "export":
            return {k: settings[k] for k in EXPORT_SETTINGS}
        if method is not None:
            own = set(METHOD_SETTINGS[method])
            settings = {k: v for k, v in settings.items() if k not in _METHOD_SPECIFIC or k in own}
        return settings

    def with_overrides(self, overrides: dict[str, Any]) -> "LoRATrainer":
        """This trainer with some settings replaced (a task's ``trainer:`` block); itself when there are none."""
        if not overrides:
            return self
        return type(self)(**{**self.model_dump(), **overrides})

    def settings_identity(self, method: str | None = None) -> str:
        """``method_settings`` as canonical JSON: the checkpoint folder is keyed by it."""
        return json.dumps(self.method_settings(method), sort_keys=True)

    def base_dir(self) -> Path:
        if self._base is None:
            student = resolve_model(self.base_model, self.model_cache_dir)
            self._base = hf_student(student.path, student.sha256, Path(self.model_cache_dir))
        return self._base

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(str(self.base_dir()), dtype=self._weights_dtype())
        tokenizer = AutoTokenizer.from_pretrained(str(self.base_dir()))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model.to(device), tokenizer

    def _lora(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )

    def _common_args(self, output_dir: str) -> dict:
        import torch

        return dict(
            output_dir=str(Path(output_dir) / "trainer"),
            learning_rate=self.learning_rate,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.grad_accum,
            max_length=self.max_length,
            seed=self.seed,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_every_steps else "no",
            save_steps=max(self.save_every_steps, 1),  # read only under "steps"
            save_total_limit=1,
            report_to=[],
            disable_tqdm=True,
            bf16=self.precision()[0] in ("bfloat16", "bf16-mixed"),
            fp16=self.precision()[0] == "float16",
            use_cpu=self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()),
            dataloader_pin_memory=False,
        )

    def _prepare(self, trainer) -> None:
        """Before ``trainer.train()``: time its steps."""
        trainer.add_callback(step_timer())

    def _train(self, trainer, output_dir: str) -> None:
        """``trainer.train()``, steps timed (``_prepare``), from the last state a killed run kept in ``output_dir``
        if any (the folder is content-addressed: same data and settings; ``checkpoints.train_or_reuse`` keeps it)."""
        from transformers.trainer_utils import get_last_checkpoint

        self._prepare(trainer)
        saved = Path(output_dir) / "trainer"
        last = get_last_checkpoint(str(saved)) if saved.is_dir() else None
        if last is not None:
            print(f"dsc: {output_dir}: resuming the training from {Path(last).name}", flush=True)
        trainer.train(resume_from_checkpoint=last)

    def _dpo_rate(self) -> dict:
        return {} if self.dpo_learning_rate is None else {"learning_rate": self.dpo_learning_rate}

    def _finish(self, trainer, tokenizer, output_dir: str, started: float, rows: int) -> TrainResult:
        out = Path(output_dir)
        adapter_dir, merged_dir = out / "adapter", out / "merged"
        trainer.model.save_pretrained(str(adapter_dir))
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        shutil.rmtree(out / "trainer", ignore_errors=True)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        seconds = time.perf_counter() - started
        return TrainResult(
            str(out),
            str(adapter_dir),
            str(merged_dir),
            losses,
            trainer.state.global_step,
            round(seconds, 2),
            round(rows * max(self.epochs, 1) / seconds, 3) if seconds else 0.0,
            self.precision()[0],
            step_seconds(trainer),
        )

    def train_sft(self, dataset, output_dir: str) -> TrainResult:
        """Supervised fine-tuning on a ``messages`` dataset (chat template from the student's tokenizer). The loss
        covers the assistant's answer only: the system and user turns are split off as TRL's ``prompt`` (with
        ``completion_only_loss``), since fitting the fixed prompt text teaches nothing and dilutes the gradient."""
        quiet_progress()
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = self._load()
        started = time.perf_counter()
        dataset = dataset.select_columns(["messages"])
        if self.sft_completion_only:
            dataset = dataset.map(
                lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                remove_columns=["messages"],
            )
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**self._common_args(output_dir)),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=self._lora(),
        )
        self._train(trainer, output_dir)
        return self._finish(trainer, tokenizer, output_dir, started, len(dataset))

    def train_dpo(self, dataset, output_dir: str, loss: LossName = "dpo") -> TrainResult:
        """DPO on prompt/chosen/rejected; rdpo needs score_chosen and score_rejected, dlma needs self_reward."""
        quiet_progress()
        import math

        from trl import DPOConfig

        if loss == "rdpo":
            tau = self.rdpo_tau
            dataset = dataset.map(
                lambda row: {"soft_label": 1 / (1 + math.exp(-(row["score_chosen"] - row["score_rejected"]) / tau))}
            )
        elif loss == "dlma" and "self_reward" not in dataset.column_names:
            raise ValueError("DLMA training needs a 'self_reward' column")
        keep = ["prompt", "chosen", "rejected"] + [
            c for c in ("soft_label", "self_reward") if c in dataset.column_names
        ]
        dataset = dataset.select_columns(keep)
        trainer_class, collator_class = dpo_trainer_class()
        model, tokenizer = self._load()
        started = time.perf_counter()
        trainer = trainer_class(
            model=model,
            args=DPOConfig(
                **{**self._common_args(output_dir), **self._dpo_rate()},
                beta=self.dpo_beta,
                precompute_ref_log_probs=self.dpo_precompute_ref,
                precompute_ref_batch_size=max(8, self.per_device_batch_size),
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=self._lora(),
            data_collator=collator_class(pad_token_id=tokenizer.pad_token_id, max_length=self.max_length),
            dsc_loss=loss,
            dlma_gamma=self.dlma_gamma,
            sft_weight=self.dpo_sft_weight,
            fused_head=self.dpo_fused_head,
        )
        self._train(trainer, output_dir)
        return self._finish(trainer, tokenizer, output_dir, started, len(dataset))

    def train_reward_model(self, dataset, output_dir: str) -> TrainResult:
        """ALMoST's reward model (resources/almost_trainer.py)."""
        from resources.almost_trainer import train_reward_model

        return train_reward_model(self, dataset, output_dir)

    def train_rl(self, prompts, policy_dir: str, reward_function, output_dir: str) -> TrainResult:
        """ALMoST's RL from synthetic feedback (resources/almost_trainer.py)."""
        from resources.almost_trainer import train_rl

        return train_rl(self, prompts, policy_dir, reward_function, output_dir)

    def merge_adapter(self, adapter_dir: str, base_dir: str | None, merged_dir: str) -> str:
        """The merged model of a saved LoRA adapter on ``base_dir`` (None: the student), as training writes it: the
        same weights dtype, PEFT's merge, the base's tokenizer (resources/checkpoint_carry.py rebuilds carried
        checkpoints with it). A sequence-classification adapter (ALMoST's reward model) keeps its scalar head."""
        from peft import PeftConfig, PeftModel
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        base = base_dir or str(self.base_dir())
        tokenizer = AutoTokenizer.from_pretrained(base)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if PeftConfig.from_pretrained(adapter_dir).task_type == "SEQ_CLS":
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=self._weights_dtype())
            model.config.pad_token_id = tokenizer.pad_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(base, dtype=self._weights_dtype())
        merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        return merged_dir

    def export_gguf(self, merged_dir: str, out_path: str) -> str:
        """Write the merged model as GGUF: the student's GGUF with every fine-tuned weight replaced (in F16) and all
        else (tokenizer, chat template, untouched quantized tensors) copied as it was."""
        export_merged_gguf(
            resolve_model(self.base_model, self.model_cache_dir).path,
            Path(merged_dir),
            Path(out_path),
            [m for m in self.target_modules],
        )
        return out_path

    def checkpoint(self, method: str, folder: Path, gguf_name: str, records: list[dict], train=None) -> Checkpoint:
        """The checkpoint of ``method`` on ``records`` in ``folder`` (content-addressed by the caller): reused when it
        is finished there, else trained (``train(dataset, output_dir)``; default: SFT for ``sft`` and
        ``placebo``, the preference loss otherwise) and exported to ``folder/gguf_name``."""

        def fit():
            from datasets import Dataset

            dataset = Dataset.from_list(records)
            if train is not None:  # ALMoST's SFT and RL bring their own training step
                return train(dataset, str(folder))
            return (
                self.train_sft(dataset, str(folder))
                if method in ("sft", "placebo")
                else self.train_dpo(dataset, str(folder), loss=method)
            )

        def export(result) -> dict[str, str]:
            return {"gguf_path": self.export_gguf(result.merged_dir, str(folder / gguf_name))}

        return train_or_reuse(folder, fit, export)

    def exported_base(self, path: Path) -> Path:
        """The untrained student passed through the checkpoints' export path (dequantized, fine-tuned weights written
        in F16) at ``path``, written once: the base every checkpoint is compared with, so export precision is not
        mistaken for training."""
        if not path.exists():
            self.export_gguf(str(self.base_dir()), str(path))  # atomic: written to .partial, then renamed
        return path
