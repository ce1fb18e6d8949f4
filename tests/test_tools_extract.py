"""Extract: merging a LoRA into a checkpoint and extracting at the LoRA's rank gives the LoRA's
delta back; an untouched text encoder is left out (and said so); clamping is sd-scripts'."""

import pytest
import torch
from network_helpers import read_file
from tools_helpers import file_deltas, layer_shapes, make_lora

from lorakit.models.load import load_model
from lorakit.networks import NetworkError, load_network
from lorakit.tools import extract_lora, merge_into_checkpoint


@pytest.fixture(scope="module")
def bases(tiny_checkpoints):
    return {family: load_model(path) for family, path in tiny_checkpoints.items() if family != "sd2"}


@pytest.mark.parametrize("family,algo,conv_dim", [("sd1", "locon", 3), ("sdxl", "lora", None)])
def test_merge_then_extract_recovers_the_delta(family, algo, conv_dim, bases, tiny_checkpoints, tmp_path):
    base = bases[family]
    lora = make_lora(base, tmp_path / "l.safetensors", algo, dim=4)
    merged = merge_into_checkpoint(tiny_checkpoints[family], [lora], tmp_path / "m.safetensors").output
    report = extract_lora(
        tiny_checkpoints[family],
        merged,
        tmp_path / "x.safetensors",
        4,
        conv_dim=conv_dim,
        clamp_quantile=None,
        min_diff=0,
    )
    assert not report.text_encoder_skipped
    shapes = layer_shapes(base)
    want, got = file_deltas(lora, shapes), file_deltas(report.output, shapes)
    assert set(got) == set(want)  # the same layers as a LoRA trained with these options
    for name, delta in want.items():
        assert torch.allclose(got[name], delta, atol=1e-5), name
    assert all(f > 0.9999 for f in report.fro_retained.values())
    net = load_network(report.output, model=base)  # loads as a kohya LoRA of this model
    assert net.algorithms == ["lora"]
    meta = read_file(report.output)[1]
    assert meta["ss_network_dim"] == "4" and meta["ss_base_model_version"] == base.base_model_version
    assert meta["modelspec.architecture"] == base.architecture + "/lora"


def test_unchanged_text_encoder_is_skipped_and_reported(bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / "unet.safetensors", "lora", network_train_unet_only=True)
    merged = merge_into_checkpoint(tiny_checkpoints["sd1"], [lora], tmp_path / "m.safetensors").output
    report = extract_lora(tiny_checkpoints["sd1"], merged, tmp_path / "x.safetensors", 2)
    assert report.text_encoder_skipped and report.text_encoder_max_diff == 0.0
    assert "text encoder unchanged" in report.text_encoder_note and "U-Net only" in report.text_encoder_note
    tensors, _ = read_file(report.output)
    assert tensors and not any(k.startswith("lora_te") for k in tensors)


def test_text_encoder_changes_below_min_diff_count_as_unchanged(bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / "l.safetensors", "lora")
    merged = merge_into_checkpoint(
        tiny_checkpoints["sd1"], [(lora, 0.001)], tmp_path / "m.safetensors"
    ).output
    te = {n: d for n, d in file_deltas(lora, layer_shapes(base)).items() if n.startswith("lora_te")}
    largest = max(float((0.001 * d).abs().max()) for d in te.values())
    skipped = extract_lora(
        tiny_checkpoints["sd1"], merged, tmp_path / "a.safetensors", 2, min_diff=largest * 2
    )
    kept = extract_lora(tiny_checkpoints["sd1"], merged, tmp_path / "b.safetensors", 2, min_diff=largest / 2)
    assert skipped.text_encoder_skipped and not kept.text_encoder_skipped
    assert skipped.text_encoder_max_diff == pytest.approx(largest, rel=1e-3)


def test_clamp_quantile_bounds_the_factors_as_sd_scripts_does(bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / "l.safetensors", "lora", dim=4)
    merged = merge_into_checkpoint(tiny_checkpoints["sd1"], [lora], tmp_path / "m.safetensors").output
    exact = extract_lora(tiny_checkpoints["sd1"], merged, tmp_path / "e.safetensors", 3, clamp_quantile=None)
    clamped = extract_lora(tiny_checkpoints["sd1"], merged, tmp_path / "c.safetensors", 3, clamp_quantile=0.9)
    te, tc = read_file(exact.output)[0], read_file(clamped.output)[0]
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    up, down = te[f"{name}.lora_up.weight"], te[f"{name}.lora_down.weight"]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.9)
    assert torch.allclose(tc[f"{name}.lora_up.weight"], up.clamp(-high, high))
    assert torch.allclose(tc[f"{name}.lora_down.weight"], down.clamp(-high, high))
    assert not torch.equal(tc[f"{name}.lora_down.weight"], down)  # something was clamped


def test_models_of_different_families_are_refused(tiny_checkpoints, tmp_path):
    with pytest.raises(NetworkError, match="same family"):
        extract_lora(tiny_checkpoints["sd1"], tiny_checkpoints["sdxl"], tmp_path / "x.safetensors", 4)
