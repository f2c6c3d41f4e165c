"""Preference losses on the policy-vs-reference margin h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r)).

- DPO:  L = −log σ(β·h)
- rDPO: L = −[p·log σ(β·h) + (1 − p)·log σ(−β·h)], p = σ((s_chosen − s_rejected)/τ) from an external reward
  (a pair the reward model doubts counts less, and a reversed pair pulls the other way)
- DLMA: L = −log σ(β·[h − γ·clamp(R, −40, 40)]), R the self-reward (a margin the pair must beat)
- with ``dpo_sft_weight`` w > 0, any of them + w·NLL(chosen), the chosen answer's mean negative log-likelihood per
  token (RPO, Pang et al. 2024): the preference term alone can lower both answers' likelihood and win by making
  everything short (privacy study: DPO answers fell from ~96 to 16 words); the NLL term keeps the chosen answers likely.
All return the batch mean; log-sigmoid keeps them stable for large margins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_label(score_chosen: torch.Tensor, score_rejected: torch.Tensor, tau: float) -> torch.Tensor:
    """rDPO's probability that the chosen answer really is better, from the external reward."""
    return torch.sigmoid((score_chosen - score_rejected) / tau)


def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * h).mean()


def rdpo_loss(h: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    return -(p * F.logsigmoid(beta * h) + (1 - p) * F.logsigmoid(-beta * h)).mean()


def dlma_loss(h: torch.Tensor, self_reward: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    return -F.logsigmoid(beta * (h - gamma * self_reward.clamp(-40.0, 40.0))).mean()


def chosen_nll(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the chosen answers' negative log-likelihood per token."""
    return -(chosen_logps / chosen_tokens.clamp(min=1)).mean()
