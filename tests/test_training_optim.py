"""Optimizers and schedules by their sd-scripts names."""

import math

import pytest
import torch

from lorakit.errors import ConfigError
from lorakit.training.config import load_config
from lorakit.training.optim import create_optimizer, create_scheduler, effective_lrs


def _groups(lr=1e-4):
    torch.manual_seed(0)
    unet, te = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4, 4))
    return [{"params": [unet], "lr": lr}, {"params": [te], "lr": lr / 10}]


@pytest.mark.parametrize(
    "name", ["AdamW", "Lion", "Prodigy", "DAdaptation", "DAdaptAdam", "AdamWScheduleFree", "SGDNesterov"]
)
def test_named_optimizers_step(name):
    lr = 1.0 if "adapt" in name.lower() or name == "Prodigy" else 1e-3
    groups = _groups(lr)
    setup = create_optimizer(name, groups, lr, {})
    before = groups[0]["params"][0].detach().clone()
    if hasattr(setup.optimizer, "train"):
        setup.optimizer.train()
    for _ in range(3):  # adaptive optimizers may take a zero first step while estimating d
        setup.optimizer.zero_grad()
        ((groups[0]["params"][0] - 1) ** 2).sum().backward()
        setup.optimizer.step()
    assert not torch.equal(before, groups[0]["params"][0])


def test_adaptive_optimizers_warn_about_low_lr_and_log_d_times_lr():
    setup = create_optimizer("Prodigy", _groups(), 1e-4, {})
    assert any("learning rates near 1.0 are normal" in n for n in setup.notes)
    assert any("one learning rate for all groups" in n for n in setup.notes)
    group = setup.optimizer.param_groups[0]
    assert effective_lrs(setup.optimizer)[0] == pytest.approx(group["d"] * group["lr"])


def test_adafactor_relative_step_is_explained():
    setup = create_optimizer("AdaFactor", _groups(), 1e-4, {})
    assert setup.relative_step and any("picks its own learning rate" in n for n in setup.notes)
    fixed = create_optimizer("AdaFactor", _groups(), 1e-4, {"relative_step": False, "scale_parameter": False})
    assert not fixed.relative_step and fixed.optimizer.param_groups[0]["lr"] == 1e-4


def test_unknown_and_missing_optimizers():
    with pytest.raises(ConfigError, match="unknown optimizer_type 'AdamW9bit'. Did you mean 'adamw8bit'"):
        create_optimizer("AdamW9bit", _groups(), 1e-4, {})
    with pytest.raises(ConfigError, match="needs the package"):
        create_optimizer("not_a_module.Optim", _groups(), 1e-4, {})


def test_cosine_with_warmup_ratio_matches_the_formula(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr_scheduler = "cosine"\nlr_warmup_steps = 0.1\n')
    config = load_config(path)
    setup = create_optimizer("AdamW", _groups(), 1e-3, {})
    scheduler = create_scheduler(setup, config, total_steps=100)
    seen = []
    for _ in range(100):
        seen.append(scheduler.get_last_lr()[0])
        setup.optimizer.step()
        scheduler.step()
    warmup = 10
    for step in (0, 5, 10, 55, 99):
        if step < warmup:
            expected = 1e-4 * step / warmup
        else:
            expected = 1e-4 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (100 - warmup)))
        assert seen[step] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_unknown_schedule(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr_scheduler = "cosin"\n')
    setup = create_optimizer("AdamW", _groups(), 1e-3, {})
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        create_scheduler(setup, load_config(path), 10)
