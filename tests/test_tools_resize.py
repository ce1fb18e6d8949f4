"""Resize: exact at the full rank, the truncated SVD (done here) below it, alpha/rank kept, and
the dynamic rules picking the ranks worked out by hand from known singular values."""

import math

import pytest
import torch
from network_helpers import dora_hand, modules_of, read_file, tiny
from tools_helpers import (
    file_deltas,
    layer_shapes,
    layer_weights,
    make_lora,
    spectrum_module,
    truncated,
    write_kohya,
)

from lorakit.errors import LorakitError
from lorakit.networks import NetworkError
from lorakit.tools import resize_lora

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"
SPECTRA = {
    Q: [10, 6, 3, 1.5, 0.8, 0.4, 0.2, 0.1],
    K: [5, 4.5, 4, 3.5, 0.05, 0.04, 0.03, 0.02],
}


@pytest.fixture
def known_lora(tmp_path):
    """Two Linear modules and a 3x3 conv module with chosen singular values, alpha 4 at rank 8."""
    modules = {
        name: spectrum_module(24, 20, s, alpha=4, seed=i) for i, (name, s) in enumerate(SPECTRA.items())
    }
    modules[CONV] = spectrum_module(16, 6, [3, 2, 1, 0.5], alpha=2, seed=7, kernel=(3, 3))
    meta = {"ss_network_dim": "8", "ss_network_alpha": "4", "ss_base_model_version": "sd_v1", "ss_seed": "42"}
    return write_kohya(tmp_path / "known.safetensors", modules, meta)


def test_full_rank_is_exact_and_keeps_alpha_over_rank(known_lora, tmp_path):
    report = resize_lora(known_lora, tmp_path / "same.safetensors", 8, new_conv_rank=4)
    before, after = file_deltas(known_lora), file_deltas(report.output)
    for name in before:
        assert torch.allclose(after[name], before[name], atol=1e-5), name
    tensors, meta = read_file(report.output)
    assert tensors[f"{Q}.alpha"].item() == pytest.approx(4.0)  # 4/8 * 8
    assert all(m.fro_retained == pytest.approx(1.0) for m in report.modules)
    assert meta["ss_seed"] == "42" and meta["ss_network_dim"] == "8"
    assert meta["ss_training_comment"].startswith("dimension is resized from 4/8 to 8 (conv: 4)")


def test_lower_rank_equals_truncated_svd(known_lora, tmp_path):
    report = resize_lora(known_lora, tmp_path / "small.safetensors", 3, new_conv_rank=2)
    before, after = file_deltas(known_lora), file_deltas(report.output)
    tensors, meta = read_file(report.output)
    for name in before:
        rank = 2 if name == CONV else 3
        assert tensors[f"{name}.lora_down.weight"].shape[0] == rank
        assert torch.allclose(after[name], truncated(before[name], rank), atol=1e-5), name
        old_alpha, old_rank = (2.0, 4) if name == CONV else (4.0, 8)
        assert tensors[f"{name}.alpha"].item() / rank == pytest.approx(old_alpha / old_rank)
    assert tensors[f"{CONV}.lora_down.weight"].shape == (2, 6, 3, 3)
    assert tensors[f"{CONV}.lora_up.weight"].shape == (16, 2, 1, 1)
    q = next(m for m in report.modules if m.name == Q)
    s = torch.tensor(SPECTRA[Q])
    assert q.fro_retained == pytest.approx(math.sqrt(float((s[:3] ** 2).sum() / (s**2).sum())), rel=1e-5)
    assert "sshs_model_hash" in meta and meta["ss_network_dim"] == "3"


def hand_rank(s: list[float], method: str, p: float) -> int:
    """The rule as documented, by plain loops."""
    if method == "sv_ratio":
        return sum(1 for v in s if v > s[0] / p)
    values = [v * v for v in s] if method == "sv_fro" else list(s)
    target = p * p if method == "sv_fro" else p
    total, running = sum(values), 0.0
    for i, v in enumerate(values):
        running += v
        if running / total >= target:
            return i + 1
    return len(s)


@pytest.mark.parametrize(
    "method,param",
    [("sv_ratio", 8), ("sv_ratio", 80), ("sv_fro", 0.95), ("sv_fro", 0.5), ("sv_cumulative", 0.9)],
)
def test_dynamic_methods_pick_the_ranks_computed_by_hand(known_lora, tmp_path, method, param):
    report = resize_lora(known_lora, tmp_path / "dyn.safetensors", 8, dynamic=method, dynamic_param=param)
    got = {m.name: m.new_rank for m in report.modules}
    for name, s in SPECTRA.items():
        assert got[name] == hand_rank(s, method, param), name
    assert got[CONV] == hand_rank([3, 2, 1, 0.5], method, param)
    tensors, meta = read_file(report.output)
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    for name, rank in got.items():
        assert tensors[f"{name}.lora_down.weight"].shape[0] == rank


def test_dynamic_rank_is_capped_by_new_rank(known_lora, tmp_path):
    report = resize_lora(known_lora, tmp_path / "cap.safetensors", 2, dynamic="sv_ratio", dynamic_param=100)
    assert {m.new_rank for m in report.modules} == {2}


def test_example_ranks_are_what_the_rules_say():
    # the worked examples of the --help text, as a check on the hand rule itself
    s = SPECTRA[Q]
    assert hand_rank(s, "sv_ratio", 8) == 4  # > 1.25: 10, 6, 3, 1.5
    assert hand_rank(s, "sv_fro", 0.95) == 2  # 136 of 148.1 >= 0.9025
    assert hand_rank(s, "sv_cumulative", 0.9) == 4  # 20.5 of 22 >= 0.9


def test_lycoris_modules_resize_from_their_full_delta(tmp_path):
    model = tiny("sd1")
    shapes = layer_shapes(model)
    for algo in ("loha", "lokr"):
        source = make_lora(model, tmp_path / f"{algo}.safetensors", algo, dim=4)
        report = resize_lora(source, tmp_path / f"{algo}-2.safetensors", 2, model=model)
        before, after = file_deltas(source, shapes), file_deltas(report.output, shapes)
        for name, delta in before.items():
            assert torch.allclose(after[name], truncated(delta, 2), atol=1e-5), (algo, name)
        assert read_file(report.output)[1]["ss_network_module"] == "networks.lora"


def test_dora_keeps_its_magnitude_and_resizes_the_direction(tmp_path):
    model = tiny("sd1")
    shapes = layer_shapes(model)
    source = make_lora(model, tmp_path / "dora.safetensors", "dora", dim=4)
    report = resize_lora(source, tmp_path / "dora-2.safetensors", 2, model=model)
    raw_before = modules_of(read_file(source)[0])
    raw_after = modules_of(read_file(report.output)[0])
    before, after = file_deltas(source, shapes), file_deltas(report.output, shapes)
    weights = layer_weights(model)
    for name in before:
        assert torch.equal(raw_after[name]["dora_scale"], raw_before[name]["dora_scale"])
        assert torch.allclose(after[name], truncated(before[name], 2), atol=1e-5)
        merged = dora_hand(weights[name], after[name], raw_after[name]["dora_scale"])
        assert torch.isfinite(merged).all()
    assert read_file(report.output)[1]["ss_network_module"] == "lycoris.kohya"


def test_zero_module_keeps_rank_one_and_bad_options_say_why(tmp_path):
    modules = {Q: spectrum_module(24, 20, [0.0] * 4, alpha=4, seed=0)}
    path = write_kohya(tmp_path / "zero.safetensors", modules)
    report = resize_lora(path, tmp_path / "z.safetensors", 2, dynamic="sv_fro", dynamic_param=0.9)
    assert report.modules[0].new_rank == 1
    with pytest.raises(LorakitError, match="needs --dynamic-param"):
        resize_lora(path, tmp_path / "x.safetensors", 2, dynamic="sv_fro")
    with pytest.raises(LorakitError, match="must be in \\(0, 1\\]"):
        resize_lora(path, tmp_path / "x.safetensors", 2, dynamic="sv_fro", dynamic_param=90)
    with pytest.raises(LorakitError, match="at least 1"):
        resize_lora(path, tmp_path / "x.safetensors", 2, dynamic="sv_ratio", dynamic_param=0.5)


def test_loha_without_a_known_layer_shape_is_an_error_not_a_guess(tmp_path):
    model = tiny("sd1")
    source = make_lora(model, tmp_path / "loha.safetensors", "loha", dim=4, args=["conv_dim=0"])
    tensors, _ = read_file(source)
    write_kohya(tmp_path / "bare.safetensors", modules_of({k: v.float() for k, v in tensors.items()}))
    with pytest.raises(NetworkError, match="does not say its layer's shape"):
        resize_lora(tmp_path / "bare.safetensors", tmp_path / "x.safetensors", 2)
