"""TRL's DPOTrainer with dsc's preference losses (resources/losses.py): TRL 1.16 has no loss hook, so the subclass
overrides ``compute_loss`` and carries each pair's soft label (rDPO) or self-reward (DLMA) through the collator."""

from __future__ import annotations

from typing import Any


def sequence_logps(model, inputs):
    """Each sequence's summed log-probability over its completion tokens, and how many tokens that is."""
    import torch

    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    targets = inputs["input_ids"][:, 1:]
    mask = inputs["completion_mask"][:, 1:].to(logits.dtype)
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(dim=1), mask.sum(dim=1)


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

        def __init__(self, *args, dsc_loss: str = "dpo", dlma_gamma: float = 0.2, sft_weight: float = 0.0, **kwargs):
            self.dsc_loss, self.dlma_gamma, self.sft_weight = dsc_loss, dlma_gamma, sft_weight
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
            logps, tokens = sequence_logps(model, inputs)
            (policy_chosen, policy_rejected), chosen_tokens = logps.chunk(2), tokens.chunk(2)[0]
            with torch.no_grad(), self.accelerator.unwrap_model(self.model).disable_adapter():
                ref_chosen, ref_rejected = sequence_logps(model, inputs)[0].chunk(2)
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
