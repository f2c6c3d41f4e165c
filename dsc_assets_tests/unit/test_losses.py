"""The preference losses against values computed by hand."""

import math

import pytest
import torch

from resources.losses import chosen_nll, dlma_loss, dpo_loss, rdpo_loss, soft_label


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_by_hand():
    h = torch.tensor([2.0, -1.0])
    expected = -(log_sigmoid(0.1 * 2.0) + log_sigmoid(0.1 * -1.0)) / 2
    assert dpo_loss(h, 0.1).item() == pytest.approx(expected, rel=1e-6)
    assert dpo_loss(torch.tensor([0.0]), 0.1).item() == pytest.approx(math.log(2))


def test_rdpo_by_hand_and_its_limits():
    h, p = torch.tensor([3.0]), torch.tensor([0.8])
    expected = -(0.8 * log_sigmoid(0.3) + 0.2 * log_sigmoid(-0.3))
    assert rdpo_loss(h, p, 0.1).item() == pytest.approx(expected, rel=1e-6)
    hs = torch.tensor([3.0, -2.0, 0.5])
    assert rdpo_loss(hs, torch.ones(3), 0.1).item() == pytest.approx(dpo_loss(hs, 0.1).item())  # p = 1 is DPO
    assert rdpo_loss(hs, torch.zeros(3), 0.1).item() == pytest.approx(dpo_loss(-hs, 0.1).item())  # p = 0 flips
    assert rdpo_loss(torch.tensor([0.0]), torch.tensor([0.5]), 0.1).item() == pytest.approx(math.log(2))


def test_soft_label_by_hand():
    assert soft_label(torch.tensor(0.9), torch.tensor(0.1), 0.5).item() == pytest.approx(1 / (1 + math.exp(-1.6)))
    assert soft_label(torch.tensor(0.2), torch.tensor(0.2), 1.0).item() == pytest.approx(0.5)


def test_dlma_by_hand_gamma_zero_and_clamp():
    h, r = torch.tensor([1.5]), torch.tensor([10.0])
    assert dlma_loss(h, r, 0.1, 0.2).item() == pytest.approx(-log_sigmoid(0.1 * (1.5 - 0.2 * 10.0)), rel=1e-6)
    hs, rs = torch.tensor([1.0, -3.0]), torch.tensor([5.0, -7.0])
    assert dlma_loss(hs, rs, 0.1, 0.0).item() == pytest.approx(dpo_loss(hs, 0.1).item())  # γ = 0 is DPO
    assert dlma_loss(h, torch.tensor([500.0]), 0.1, 0.2).item() == pytest.approx(
        dlma_loss(h, torch.tensor([40.0]), 0.1, 0.2).item()
    )
    assert dlma_loss(h, torch.tensor([-500.0]), 0.1, 0.2).item() == pytest.approx(-log_sigmoid(0.1 * (1.5 + 8.0)))


def test_chosen_nll_is_the_mean_per_token_negative_log_likelihood():
    logps, tokens = torch.tensor([-6.0, -2.0]), torch.tensor([3.0, 4.0])
    assert chosen_nll(logps, tokens).item() == pytest.approx((2.0 + 0.5) / 2)
    assert chosen_nll(torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0  # an empty answer: no division by 0


def test_a_checkpoints_identity_holds_the_common_settings_and_its_own_only():
    from resources.trainer import METHOD_SETTINGS, LoRATrainer

    base, beta = LoRATrainer(), LoRATrainer(dpo_beta=0.3)
    changed = {m for m in METHOD_SETTINGS if base.settings_identity(m) != beta.settings_identity(m)}
    assert changed == {"dpo", "rdpo", "dlma"}
    steps = LoRATrainer(max_steps=5)
    assert {m for m in METHOD_SETTINGS if base.settings_identity(m) == steps.settings_identity(m)} == set()
    assert base.settings_identity("export") == steps.settings_identity("export")  # the untrained base: no training
    assert base.settings_identity("export") != LoRATrainer(target_modules=["q_proj"]).settings_identity("export")
    assert LoRATrainer(model_cache_dir="/elsewhere").settings_identity("sft") == base.settings_identity("sft")
