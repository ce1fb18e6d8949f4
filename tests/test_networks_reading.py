"""Reading the files users have: kohya LoRA/LoCon/LoHa/LoKr/DyLoRA written here from the documented
formats, diffusers-format files (checked against diffusers' own fuse), PEFT adapters (checked
against PEFT's own merge), and the errors for the wrong family or unknown content."""

import json

import pytest
import torch
from network_helpers import hand_delta, layer_weights, randomize, tiny
from safetensors.torch import save_file

from lorakit.networks import NetworkError, create_network, load_network, merge_networks

g = torch.Generator().manual_seed(5)


def rnd(*shape):
    return torch.randn(*shape, generator=g) * 0.1


# tiny SD1 layers (width 32): proj_in is a 1x1 conv, conv1 a 3x3 conv, q_proj a Linear
PROJ_IN = "lora_unet_down_blocks_0_attentions_0_proj_in"
CONV1 = "lora_unet_down_blocks_0_resnets_0_conv1"
TO_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
Q_PROJ = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
SHAPES = {PROJ_IN: (32, 32, 1, 1), CONV1: (32, 32, 3, 3), TO_K: (32, 32), Q_PROJ: (32, 32)}
WEIGHT_KEYS = {
    PROJ_IN: "unet.down_blocks.0.attentions.0.proj_in.weight",
    CONV1: "unet.down_blocks.0.resnets.0.conv1.weight",
    TO_K: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    Q_PROJ: "te0.encoder.layers.0.self_attn.q_proj.weight",
}

FIXTURES = {
    "lora": {
        f"{PROJ_IN}.lora_down.weight": rnd(4, 32, 1, 1),
        f"{PROJ_IN}.lora_up.weight": rnd(32, 4, 1, 1),
        f"{PROJ_IN}.alpha": torch.tensor(2.0),
        f"{Q_PROJ}.lora_down.weight": rnd(8, 32),  # no alpha: scale 1
        f"{Q_PROJ}.lora_up.weight": rnd(32, 8),
    },
    "lora_2d_proj_in": {  # written by some tools; ComfyUI reads it, so does lorakit
        f"{PROJ_IN}.lora_down.weight": rnd(4, 32),
        f"{PROJ_IN}.lora_up.weight": rnd(32, 4),
        f"{PROJ_IN}.alpha": torch.tensor(4.0),
    },
    "locon": {
        f"{CONV1}.lora_down.weight": rnd(4, 32, 3, 3),
        f"{CONV1}.lora_up.weight": rnd(32, 4, 1, 1),
        f"{CONV1}.alpha": torch.tensor(1.0),
        f"{TO_K}.lora_down.weight": rnd(4, 32),
        f"{TO_K}.lora_up.weight": rnd(32, 4),
        f"{TO_K}.alpha": torch.tensor(8.0),
    },
    "loha": {
        f"{TO_K}.hada_w1_a": rnd(32, 4),
        f"{TO_K}.hada_w1_b": rnd(4, 32),
        f"{TO_K}.hada_w2_a": rnd(32, 4),
        f"{TO_K}.hada_w2_b": rnd(4, 32),
        f"{TO_K}.alpha": torch.tensor(2.0),
        f"{CONV1}.hada_w1_a": rnd(32, 2),
        f"{CONV1}.hada_w1_b": rnd(2, 32 * 9),
        f"{CONV1}.hada_w2_a": rnd(32, 2),
        f"{CONV1}.hada_w2_b": rnd(2, 32 * 9),
        f"{CONV1}.alpha": torch.tensor(1.0),
    },
    "lokr": {
        f"{TO_K}.lokr_w1": rnd(4, 4),  # 32 = 4 x 8 on both sides
        f"{TO_K}.lokr_w2_a": rnd(8, 2),
        f"{TO_K}.lokr_w2_b": rnd(2, 8),
        f"{TO_K}.alpha": torch.tensor(1.0),  # decomposed W2: scale 1/2
        f"{Q_PROJ}.lokr_w1": rnd(2, 2),
        f"{Q_PROJ}.lokr_w2": rnd(16, 16),
        f"{Q_PROJ}.alpha": torch.tensor(100.0),  # both full: alpha ignored, scale 1
        f"{CONV1}.lokr_w1": rnd(4, 4),
        f"{CONV1}.lokr_w2": rnd(8, 8, 3, 3),
    },
    "dylora": {
        f"{TO_K}.lora_down.weight": rnd(8, 32),
        f"{TO_K}.lora_up.weight": rnd(32, 8),
        f"{TO_K}.alpha": torch.tensor(4.0),
    },
}


@pytest.mark.parametrize("name", list(FIXTURES))
def test_kohya_files_merge_as_the_format_says(name, tmp_path):
    path = tmp_path / f"{name}.safetensors"
    metadata = {"ss_network_module": "networks.dylora"} if name == "dylora" else {}
    save_file(FIXTURES[name], str(path), metadata=metadata)
    model = tiny("sd1")
    before = layer_weights(model)
    merge_networks(model, [(path, 0.7)])
    after = layer_weights(model)
    modules: dict[str, dict] = {}
    for key, value in FIXTURES[name].items():
        module, _, suffix = key.partition(".")
        modules.setdefault(module, {})[suffix] = value.double()
    for module, tensors in modules.items():
        key = WEIGHT_KEYS[module]
        expected = 0.7 * hand_delta(tensors, SHAPES[module])
        assert torch.allclose((after[key] - before[key]).double(), expected, atol=1e-6), module
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {WEIGHT_KEYS[m] for m in modules}


def diffusers_fixture():
    """The diffusers (PEFT-backed) layout, alphas in `lora_adapter_metadata`."""
    tensors = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": rnd(4, 32),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": rnd(32, 4),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_A.weight": rnd(4, 32),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight": rnd(32, 4),
        "unet.up_blocks.1.attentions.0.proj_in.lora_A.weight": rnd(4, 32, 1, 1),
        "unet.up_blocks.1.attentions.0.proj_in.lora_B.weight": rnd(32, 4, 1, 1),
        "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.down.weight": rnd(4, 32),
        "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.up.weight": rnd(64, 4),
    }
    config = {
        "unet.r": 4,
        "unet.lora_alpha": 2,
        "unet.alpha_pattern": {"proj_in": 8},
        "unet.target_modules": ["to_q", "to_out.0", "proj_in"],
        "text_encoder.r": 4,
        "text_encoder.lora_alpha": 2,
        "text_encoder.target_modules": ["fc1"],
    }
    return tensors, {"lora_adapter_metadata": json.dumps(config)}


def test_diffusers_format_merges_like_diffusers_fuse(tmp_path):
    from test_networks_diffusers import pipeline  # noqa: PLC0415

    tensors, metadata = diffusers_fixture()
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    network = load_network(path)
    assert network.format == "diffusers"

    ours = tiny("sd1")
    before = layer_weights(ours)
    merge_networks(ours, [path])
    expected = layer_weights(ours)
    theirs = tiny("sd1")
    pipe = pipeline(theirs)
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    got = layer_weights(theirs)
    changed = [k for k in expected if not torch.equal(expected[k], before[k])]
    assert len(changed) == 4
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=2e-6), key


def test_old_diffusers_attention_processor_format(tmp_path):
    down, up = rnd(4, 32), rnd(32, 4)
    te_down, te_up = rnd(4, 32), rnd(32, 4)
    tensors = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight": down,
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight": up,
        "text_encoder.text_model.encoder.layers.0.self_attn.v_proj.lora_linear_layer.down.weight": te_down,
        "text_encoder.text_model.encoder.layers.0.self_attn.v_proj.lora_linear_layer.up.weight": te_up,
    }
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path))
    model = tiny("sd1")
    before = layer_weights(model)
    merge_networks(model, [path])
    after = layer_weights(model)
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight"
    assert torch.allclose(after[key] - before[key], up @ down, atol=1e-6)  # no alpha: scale 1
    key = "te0.encoder.layers.0.self_attn.v_proj.weight"
    assert torch.allclose(after[key] - before[key], te_up @ te_down, atol=1e-6)


def test_peft_adapter_merges_like_peft(tmp_path):
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    reference = tiny("sd1")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["to_q", "to_v", "proj_in"],
        init_lora_weights=False,
        alpha_pattern={"to_v": 2},
    )
    peft_model = get_peft_model(reference.unet, config)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = {k: v.clone() for k, v in peft_model.merge_and_unload().state_dict().items()}

    path = tmp_path / "adapter" / "adapter_model.safetensors"
    model = tiny("sd1")
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    network = load_network(path, model=model)
    assert network.format == "peft"
    assert len(network.modules) == 4 * 5  # per transformer: proj_in, attn1/attn2 to_q and to_v
    merge_networks(model, [network])
    got = model.unet.state_dict()
    changed = [k for k in got if not torch.equal(got[k], before[k])]
    assert len(changed) == 4 * 5
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=2e-6), key


def test_kohya_names_from_a_loaded_diffusers_file(tmp_path):
    tensors, metadata = diffusers_fixture()
    path = tmp_path / "d.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    network = load_network(path, model=tiny("sd1"))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" in network.modules
    assert "lora_te_text_model_encoder_layers_1_mlp_fc1" in network.modules
    assert network.modules["lora_unet_up_blocks_1_attentions_0_proj_in"].alpha == 8


def test_sdxl_lora_on_sd1_model_is_a_clear_error(tmp_path):
    path = create_network(tiny("sdxl"), "networks.lora", 2, 1).save(tmp_path / "xl.safetensors")
    with pytest.raises(NetworkError, match=r"this LoRA was trained for SDXL; the model is SD 1\.x"):
        load_network(path, model=tiny("sd1"))


def test_sd1_lora_on_sdxl_model_is_a_clear_error(tmp_path):
    # a real SD1.5 LoRA: the cross-attention reads CLIP-L's 768-wide states
    path = tmp_path / "sd15.safetensors"
    save_file({f"{TO_K}.lora_down.weight": rnd(4, 768), f"{TO_K}.lora_up.weight": rnd(320, 4)}, str(path))
    with pytest.raises(NetworkError, match=r"this LoRA was trained for SD 1\.x; the model is SDXL"):
        load_network(path, model=tiny("sdxl"))


def test_lorakit_sd1_file_on_sd2_model_is_caught_by_metadata(tmp_path):
    net = create_network(tiny("sd1"), "networks.lora", 2, 1)
    randomize(net)
    path = net.save(tmp_path / "sd1.safetensors")
    with pytest.raises(NetworkError, match=r"trained for SD 1\.x; the model is SD 2\.x"):
        merge_networks(tiny("sd2"), [path])


def test_names_that_match_no_layer_are_an_error(tmp_path):
    path = tmp_path / "typo.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_qq"
    save_file({f"{name}.lora_down.weight": rnd(2, 32), f"{name}.lora_up.weight": rnd(32, 2)}, str(path))
    with pytest.raises(NetworkError, match="match no layer.*attn1_to_qq"):
        load_network(path, model=tiny("sd1"))


def test_unsupported_algorithms_and_non_lora_files(tmp_path):
    oft = tmp_path / "oft.safetensors"
    save_file({f"{TO_K}.oft_blocks": rnd(4, 8, 8), f"{TO_K}.alpha": torch.tensor(1.0)}, str(oft))
    with pytest.raises(NetworkError, match="OFT"):
        load_network(oft, model=tiny("sd1"))
    other = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": rnd(4, 4)}, str(other))
    with pytest.raises(NetworkError, match="not a LoRA"):
        load_network(other)


def test_wrong_shape_says_the_file_is_for_another_size(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({f"{Q_PROJ}.lora_down.weight": rnd(4, 40), f"{Q_PROJ}.lora_up.weight": rnd(40, 4)}, str(path))
    with pytest.raises(NetworkError, match="does not fit layer"):
        load_network(path, model=tiny("sd1"))
