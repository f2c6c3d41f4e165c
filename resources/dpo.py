"""TRL's DPOTrainer with dsc's preference losses (resources/losses.py): TRL 1.16 has no loss hook, so the subclass
overrides ``compute_loss`` and carries each pair's soft label (rDPO) or self-reward (DLMA) through the collator."""

from __future__ import annotations

from typing import Any


def sequence_logps(model, inputs, fused: bool = False):
    """Each sequence's summed log-probability over its completion tokens, and how many tokens that is. ``fused``:
    through the LM head TRL's DPOTrainer installs (``fused_lm_head``), which projects only the completion positions,
    in tiles, and never holds the (batch, length, vocabulary) logits; else the plain forward and a full log-softmax."""
    import torch

    mask = inputs["completion_mask"][:, 1:]
    if fused:
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
        )
        return out.log_probs[:, -mask.size(1) :].sum(dim=1), mask.sum(dim=1).to(out.log_probs.dtype)
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    targets = inputs["input_ids"][:, 1:]
    mask = mask.to(logits.dtype)
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(dim=1), mask.sum(dim=1)


def reference_logps(trainer, model, inputs, like):
    """The frozen reference's (chosen, rejected) log-probabilities: computed once per dataset where TRL put them
    in the batch (``precompute_ref_log_probs``), else now, with the adapter off."""
    import torch

    if "ref_chosen_logps" in inputs:
        return inputs["ref_chosen_logps"].to(like), inputs["ref_rejected_logps"].to(like)
    with torch.no_grad(), trainer.accelerator.unwrap_model(trainer.model).disable_adapter():
        return sequence_logps(model, inputs, trainer.fused_head)[0].chunk(2)


def dpo_trainer_class():
    """(the DPOTrainer subclass, its collator), built on first use: importing TRL costs seconds."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from resources.losses import chosen_nll, dlma_loss, dpo_loss, rdpo_loss

    extra_columns = ("soft_label", "self_reward")

    class PairCollator(DataCollatorForPreference):
        """TRL's preference collator, carrying the per-pair soft label / self-reward along."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            for column in extra_columns:
                if column in examples[0]:
                    batch[column] = torch.tensor([float(e[column]) for e in examples])
            return batch

    class RefinedDPOTrainer(DPOTrainer):
        """DPOTrainer with the loss chosen by ``dsc_loss``: dpo, rdpo (soft labels) or dlma (self-reward margin)."""

        def __init__(self, *args, dsc_loss="dpo", dlma_gamma=0.2, sft_weight=0.0, fused_head=False, **kwargs):
            self.dsc_loss, self.dlma_gamma, self.sft_weight, self.fused_head = (
                dsc_loss,
                dlma_gamma,
                sft_weight,
                fused_head,
            )
            super().__init__(*args, **kwargs)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(self._signature_columns) + list(extra_columns)

        def _pair_loss(self, h: torch.Tensor, inputs) -> torch.Tensor:
            if self.dsc_loss == "rdpo":
                return rdpo_loss(h, inputs["soft_label"].to(h), self.beta)
            if self.dsc_loss == "dlma":
                return dlma_loss(h, inputs["self_reward"].to(h), self.beta, self.dlma_gamma)
            return dpo_loss(h, self.beta)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logps, tokens = sequence_logps(model, inputs, self.fused_head)
            (policy_chosen, policy_rejected), chosen_tokens = logps.chunk(2), tokens.chunk(2)[0]
            ref_chosen, ref_rejected = reference_logps(self, model, inputs, logps)
            h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
            loss = self._pair_loss(h, inputs)
            mode = "train" if model.training else "eval"
            if self.sft_weight > 0:
                nll = chosen_nll(policy_chosen, chosen_tokens)
                loss = loss + self.sft_weight * nll
                self._metrics[mode]["nll_chosen"].append(nll.item())
            self._metrics[mode]["rewards/margins"].append((self.beta * h).mean().item())
            self._metrics[mode]["rewards/accuracies"].append((h > 0).float().mean().item())
            return (loss, {}) if return_outputs else loss

    return RefinedDPOTrainer, PairCollator
