"""LoRAs merged into one LoRA: sd-scripts' same-rank merge (factors added, weight squared, cross
terms), the exact --concat, and the SVD merge, each checked against the formula done here."""

import json
import math

import pytest
import torch
from network_helpers import read_file, tiny
from tools_helpers import file_deltas, layer_shapes, make_lora, spectrum_module, truncated, write_kohya

from lorakit.networks import NetworkError
from lorakit.tools import LoraSpec, merge_loras

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
V = "lora_te_text_model_encoder_layers_0_self_attn_v_proj"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"


def lora_file(path, rank, alpha, seed, title):
    gen = torch.Generator().manual_seed(seed)
    modules = {
        Q: {
            "lora_down.weight": torch.randn(rank, 20, generator=gen),
            "lora_up.weight": torch.randn(24, rank, generator=gen),
        },
        V: {
            "lora_down.weight": torch.randn(rank, 16, generator=gen),
            "lora_up.weight": torch.randn(16, rank, generator=gen),
        },
        CONV: {
            "lora_down.weight": torch.randn(rank, 6, 3, 3, generator=gen),
            "lora_up.weight": torch.randn(12, rank, 1, 1, generator=gen),
        },
    }
    for parts in modules.values():
        parts["alpha"] = torch.tensor(float(alpha))
    meta = {
        "ss_base_model_version": "sd_v1",
        "ss_clip_skip": "2",
        "ss_seed": str(seed),
        "modelspec.title": title,
    }
    meta["modelspec.architecture"] = "stable-diffusion-v1/lora"
    return write_kohya(path, modules, meta)


@pytest.fixture
def pair(tmp_path):
    return lora_file(tmp_path / "a.safetensors", 4, 2, 1, "A"), lora_file(
        tmp_path / "b.safetensors", 4, 8, 2, "B"
    )


def test_same_rank_merge_is_sd_scripts_formula(pair, tmp_path):
    a, b = pair
    report = merge_loras([(a, 0.8), (b, -0.5)], tmp_path / "m.safetensors")
    assert report.mode == "weighted"
    ta, _ = read_file(a)
    tb, _ = read_file(b)
    out, meta = read_file(report.output)
    for name in (Q, V, CONV):
        # each factor x sqrt(alpha/alpha_first) x ratio, the up factor by its absolute value
        sa, sb = math.sqrt(2 / 2) * 0.8, math.sqrt(8 / 2) * -0.5
        up = ta[f"{name}.lora_up.weight"] * abs(sa) + tb[f"{name}.lora_up.weight"] * abs(sb)
        down = ta[f"{name}.lora_down.weight"] * sa + tb[f"{name}.lora_down.weight"] * sb
        assert torch.allclose(out[f"{name}.lora_up.weight"], up, atol=1e-6)
        assert torch.allclose(out[f"{name}.lora_down.weight"], down, atol=1e-6)
        assert out[f"{name}.alpha"].item() == 2.0
    assert meta["modelspec.merged_from"] == "a:0.8, b:-0.5"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_clip_skip"] == "2"
    assert "ss_seed" not in meta  # the inputs disagree: no single value is true of the merge
    recipe = json.loads(meta["lorakit_merge_recipe"])
    assert [entry["title"] for entry in recipe["loras"]] == ["A", "B"]
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.title"] == "m"


def test_same_rank_merge_squares_a_lone_weight_and_same_to_strength_does_not(pair, tmp_path):
    a, _ = pair
    delta = file_deltas(a)
    squared = file_deltas(merge_loras([(a, 0.6)], tmp_path / "sq.safetensors").output)
    kept = file_deltas(merge_loras([(a, 0.6)], tmp_path / "st.safetensors", same_to_strength=True).output)
    negative = file_deltas(
        merge_loras([(a, -0.6)], tmp_path / "neg.safetensors", same_to_strength=True).output
    )
    for name in delta:
        assert torch.allclose(squared[name], 0.36 * delta[name], atol=1e-5)
        assert torch.allclose(kept[name], 0.6 * delta[name], atol=1e-5)
        assert torch.allclose(negative[name], -0.6 * delta[name], atol=1e-5)


def test_concat_of_different_ranks_is_the_exact_weighted_sum(tmp_path):
    a = lora_file(tmp_path / "a.safetensors", 4, 2, 1, "A")
    b = lora_file(tmp_path / "b.safetensors", 8, 3, 2, "B")
    with pytest.raises(NetworkError, match="--concat"):
        merge_loras([a, b], tmp_path / "x.safetensors")
    report = merge_loras([(a, 0.7), (b, -1.3)], tmp_path / "c.safetensors", concat=True)
    da, db, dc = file_deltas(a), file_deltas(b), file_deltas(report.output)
    out, meta = read_file(report.output)
    for name in da:
        assert torch.allclose(dc[name], 0.7 * da[name] - 1.3 * db[name], atol=1e-4)
        assert out[f"{name}.lora_down.weight"].shape[0] == 12 and out[f"{name}.alpha"].item() == 12
    assert meta["ss_network_dim"] == "12" and json.loads(meta["ss_network_args"])["conv_dim"] == "12"


def test_svd_merge_equals_truncated_svd_of_the_weighted_sum(tmp_path):
    a = lora_file(tmp_path / "a.safetensors", 4, 2, 1, "A")
    b = lora_file(tmp_path / "b.safetensors", 8, 3, 2, "B")
    da, db = file_deltas(a), file_deltas(b)
    full = merge_loras([(a, 0.7), (b, 0.4)], tmp_path / "full.safetensors", new_rank=12)
    small = merge_loras([(a, 0.7), (b, 0.4)], tmp_path / "small.safetensors", new_rank=5, new_conv_rank=3)
    d_full, d_small = file_deltas(full.output), file_deltas(small.output)
    out, meta = read_file(small.output)
    for name in da:
        total = 0.7 * da[name] + 0.4 * db[name]
        assert torch.allclose(d_full[name], total, atol=1e-4), name
        rank = 3 if name == CONV else 5
        assert out[f"{name}.lora_down.weight"].shape[0] == rank and out[f"{name}.alpha"].item() == rank
        assert torch.allclose(d_small[name], truncated(total, rank), atol=1e-4), name
        s = torch.linalg.svd(total.reshape(total.shape[0], -1), full_matrices=False).S
        assert small.retained[name] == pytest.approx(float((s[:rank] ** 2).sum().sqrt() / s.norm()), rel=1e-4)
    assert meta["ss_network_dim"] == "5" and json.loads(meta["lorakit_merge_recipe"])["new_rank"] == 5


def test_svd_merge_takes_any_algorithm_and_block_weights(tmp_path):
    model = tiny("sd1")
    shapes = layer_shapes(model)
    loha = make_lora(model, tmp_path / "loha.safetensors", "loha", dim=2, seed=3)
    lora = make_lora(model, tmp_path / "lora.safetensors", "locon", dim=4, seed=4)
    blocks = [1.0] + [0.0] * 12 + [1.0] + [0.5] * 12  # 26 values: BASE, IN00-IN11, M00, OUT00-OUT11
    report = merge_loras(
        [LoraSpec(loha, 1.0), LoraSpec(lora, 0.5, blocks)],
        tmp_path / "m.safetensors",
        new_rank=64,
        model=model,
    )
    d1, d2, got = file_deltas(loha, shapes), file_deltas(lora, shapes), file_deltas(report.output, shapes)

    def block(name):
        return 0.0 if "_down_blocks_" in name else 0.5 if "_up_blocks_" in name else 1.0

    for name in set(d1) | set(d2):
        want = d1.get(name, 0) + 0.5 * block(name) * d2.get(name, 0)
        assert torch.allclose(got[name], torch.as_tensor(want, dtype=got[name].dtype), atol=1e-4), name
    with pytest.raises(NetworkError, match="loha; the same-rank merge works on LoRA/LoCon"):
        merge_loras([loha, loha], tmp_path / "x.safetensors", model=model)


def test_dora_and_mixed_families_are_refused(tmp_path):
    sd1, xl = tiny("sd1"), tiny("sdxl")
    dora = make_lora(sd1, tmp_path / "dora.safetensors", "dora")
    with pytest.raises(NetworkError, match="DoRA, whose effect depends on the base model"):
        merge_loras([dora], tmp_path / "x.safetensors", new_rank=4, model=sd1)
    a = make_lora(sd1, tmp_path / "a.safetensors", "lora")
    b = make_lora(xl, tmp_path / "b.safetensors", "lora")
    with pytest.raises(NetworkError, match="different base models"):
        merge_loras([a, b], tmp_path / "x.safetensors", new_rank=4)


def test_known_spectrum_survives_a_lone_svd_merge(tmp_path):
    path = write_kohya(
        tmp_path / "s.safetensors", {Q: spectrum_module(24, 20, [4, 2, 1, 0.5], alpha=4, seed=0)}
    )
    report = merge_loras([(path, 2.0)], tmp_path / "m.safetensors", new_rank=2)
    s = torch.tensor([4, 2, 1, 0.5]) * 2.0  # weight x scale(4/4) x S
    assert report.retained[Q] == pytest.approx(float(s[:2].norm() / s.norm()), rel=1e-5)
