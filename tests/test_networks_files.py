"""Saved files: for every algorithm, the delta lorakit merges equals the delta computed by hand
from the saved tensors; metadata, modelspec, hashes, precision and continued training."""

import hashlib
import json

import pytest
import torch
from network_helpers import dora_hand, hand_delta, modules_of, randomize, read_file, tiny
from safetensors.torch import save as st_save

from lorakit.networks import NetworkError, create_network, load_network, merge_networks
from lorakit.networks.network import create_network_from_weights

CASES = {
    "lora": ("networks.lora", []),
    "locon": ("networks.lora", ["conv_dim=3", "conv_alpha=2"]),
    "locon_tucker": ("lycoris.kohya", ["algo=locon", "conv_dim=3", "conv_alpha=1.5", "use_tucker=true"]),
    "loha": ("lycoris.kohya", ["algo=loha", "conv_dim=2", "conv_alpha=1"]),
    "loha_tucker": ("lycoris.kohya", ["algo=loha", "conv_dim=2", "use_tucker=True"]),
    "lokr": ("lycoris.kohya", ["algo=lokr", "factor=4", "conv_dim=2"]),
    "lokr_both": ("lycoris.kohya", ["algo=lokr", "factor=8", "decompose_both=true", "conv_dim=1"]),
    "dylora": ("networks.dylora", ["unit=2"]),
    "dora": ("lycoris.kohya", ["algo=lora", "dora_wd=true", "conv_dim=2"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_merged_delta_equals_hand_delta_from_saved_tensors(case, tmp_path):
    module, args = CASES[case]
    model = tiny("sd1")
    net = create_network(model, module, 4, 2, args)
    randomize(net)
    path = net.save(tmp_path / f"{case}.safetensors")

    tensors, _ = read_file(path)
    modules = modules_of(tensors)
    target = tiny("sd1")  # same seed: same base weights
    layers = {name: layer for name, layer in net.layers.items()}
    before = {name: layers[name].module.weight.detach().double().clone() for name in layers}
    merge_networks(target, [path])
    target_layers = {name: layer for name, layer in create_network(target, module, 4, 2, args).layers.items()}

    kinds = set()
    for name, t in modules.items():
        shape = before[name].shape
        expected = hand_delta(t, shape)
        if "dora_scale" in t:
            expected = dora_hand(before[name], expected, t["dora_scale"])
        kinds.add((len(shape), "lora_mid.weight" in t or "hada_t1" in t))
        merged = target_layers[name].module.weight.detach().double() - before[name]
        assert torch.allclose(merged, expected, atol=1e-5), name
    assert len(modules) == len(net.layers)
    if "conv_dim" in " ".join(args):
        assert (4, False) in kinds or (4, True) in kinds  # conv layers were covered
    if "tucker" in case:
        assert (4, True) in kinds


def test_algorithm_tensor_names_and_shapes(tmp_path):
    model = tiny("sd1")
    loha = create_network(model, "lycoris.kohya", 4, 2, ["algo=loha"]).weights()
    assert loha["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a"].shape == (
        32,
        4,
    )
    lokr = create_network(model, "lycoris.kohya", 4, 2, ["algo=lokr", "factor=4"]).weights()
    # 32 -> 4 x 8 (W1 full [4,4]; W2 = w2_a [8,4] @ w2_b [4,8]... rank 4 >= 8/2: W2 full [8,8])
    assert lokr["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w1"].shape == (
        4,
        4,
    )
    assert lokr["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w2"].shape == (
        8,
        8,
    )
    # both factors full: alpha is stored as the rank so every client's scale is 1
    assert lokr["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"].item() == 4


def test_metadata_modelspec_and_hashes(tmp_path):
    model = tiny("sd1")
    net = create_network(model, "networks.lora", 32, 4, ["conv_dim=32", "conv_alpha=1"])
    randomize(net)
    path = net.save(
        tmp_path / "out" / "style.safetensors",
        metadata={"ss_output_name": "style", "ss_learning_rate": "0.0001", "ss_clip_skip": "2"},
        modelspec={"trigger_phrase": "sks style", "author": "me"},
    )
    tensors, meta = read_file(path)
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "32" and meta["ss_network_alpha"] == "4.0"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "32", "conv_alpha": "1"}
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["modelspec.title"] == "style"
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert meta["modelspec.encoder_layer"] == "2"
    assert meta["modelspec.trigger_phrase"] == "sks style" and meta["modelspec.author"] == "me"
    # sshs_model_hash: sha256 of everything after the header
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()
    # sshs_legacy_hash: over a file holding only the ss_* metadata, 64 KiB at 1 MiB
    ss_only = st_save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    assert len(ss_only) > 0x110000  # large enough that the legacy window holds data
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert [p.name for p in path.parent.iterdir()] == ["style.safetensors"]  # nothing left behind


def test_sdxl_modelspec_names_the_sgm_implementation(tmp_path):
    net = create_network(tiny("sdxl"), "networks.lora", 2, 1)
    _, meta = read_file(net.save(tmp_path / "xl.safetensors"))
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"


@pytest.mark.parametrize(
    "precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("float", torch.float32)]
)
def test_save_precision_applies_to_all_tensors_alpha_included(precision, dtype, tmp_path):
    net = create_network(tiny("sd1"), "networks.lora", 2, 1)
    tensors, _ = read_file(net.save(tmp_path / "p.safetensors", precision=precision))
    assert {t.dtype for t in tensors.values()} == {dtype}


def test_unknown_precision_is_an_error(tmp_path):
    net = create_network(tiny("sd1"), "networks.lora", 2, 1)
    with pytest.raises(NetworkError, match="save_precision 'fp8'"):
        net.save(tmp_path / "p.safetensors", precision="fp8")


@pytest.mark.parametrize("case", ["locon", "loha", "lokr", "dora"])
def test_load_weights_continues_training_from_a_file(case, tmp_path):
    module, args = CASES[case]
    model = tiny("sd1")
    net = create_network(model, module, 4, 2, args)
    randomize(net, seed=3)
    path = net.save(tmp_path / "a.safetensors")
    again = create_network(model, module, 4, 2, args)
    assert again.load_weights(path) == []
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_load_weights_with_other_dims_says_what_to_change(tmp_path):
    model = tiny("sd1")
    path = create_network(model, "networks.lora", 4, 2).save(tmp_path / "a.safetensors")
    other = create_network(model, "networks.lora", 8, 2)
    with pytest.raises(NetworkError, match="network_dim"):
        other.load_weights(path)
    loha = create_network(model, "lycoris.kohya", 4, 2, ["algo=loha"])
    with pytest.raises(NetworkError, match="another algorithm"):
        loha.load_weights(path)


def test_loaded_file_reports_its_family_and_modules(tmp_path):
    model = tiny("sd2")
    net = create_network(model, "networks.lora", 2, 1)
    network = load_network(net.save(tmp_path / "sd2.safetensors"), model=model)
    assert network.family.name == "sd2"
    assert set(network.modules) == set(net.layers)
    assert network.format == "kohya"


@pytest.mark.parametrize("case", list(CASES))
def test_network_from_weights_rebuilds_the_same_network(case, tmp_path):
    module, args = CASES[case]
    model = tiny("sd1")
    net = create_network(model, module, 4, 2, args)
    randomize(net, seed=4)
    path = net.save(tmp_path / "w.safetensors")
    again = create_network_from_weights(tiny("sd1"), path)
    assert set(again.layers) == set(net.layers)
    expected, got = net.deltas(), again.deltas()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name
