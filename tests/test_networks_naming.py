"""Module counts and sd-scripts key names on full-size SD1.5 / SDXL, built on the meta device."""

import re
from types import SimpleNamespace

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lorakit.models.families import SD1, SDXL
from lorakit.networks import create_network
from lorakit.networks.naming import block_index


def meta_model(family):
    with init_empty_weights(), torch.device("meta"):
        unet = UNet2DConditionModel.from_config(family.config("unet"))
        encoders = [CLIPTextModel(CLIPTextConfig(**family.config("text_encoder")))]
        if family.is_xl:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**family.config("text_encoder_2"))))
    return SimpleNamespace(family=family, unet=unet, text_encoders=encoders, base_model_version="")


@pytest.fixture(scope="module")
def sd1():
    return meta_model(SD1)


@pytest.fixture(scope="module")
def sdxl():
    return meta_model(SDXL)


def names(network, part):
    return {name for name, layer in network.layers.items() if layer.part == part}


def test_sd15_default_targets_match_sd_scripts(sd1):
    net = create_network(sd1, "networks.lora", 1, 1)
    assert net.counts() == {"unet": 192, "text_encoder": 72}
    unet, te = names(net, "unet"), names(net, "text_encoder")
    for expected in [
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
    ]:
        assert expected in unet
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in te
    assert "lora_te_text_model_encoder_layers_11_mlp_fc2" in te
    pattern = re.compile(
        r"lora_unet_(down_blocks_[0-3]|mid_block|up_blocks_[0-3])_attentions_\d_"
        r"(proj_in|proj_out|transformer_blocks_0_(attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2))"
    )
    assert all(pattern.fullmatch(n) for n in unet)
    te_pattern = re.compile(
        r"lora_te_text_model_encoder_layers_(\d|1[01])_(self_attn_(q|k|v|out)_proj|mlp_fc[12])"
    )
    assert all(te_pattern.fullmatch(n) for n in te)
    # SD1's proj_in/proj_out are 1x1 convs: the tensors must be 4-D (diffusers rejects 2-D)
    weights = net.weights()
    assert weights["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (1, 320, 1, 1)
    assert weights["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"].shape == (320, 1, 1, 1)


def test_sd15_conv_dim_adds_resnets_and_samplers_as_sd_scripts(sd1):
    net = create_network(sd1, "networks.lora", 1, 1, ["conv_dim=1"], network_train_unet_only=True)
    unet = names(net, "unet")
    assert net.counts() == {"unet": 278}  # sd-scripts logs "create LoRA for U-Net: 278 modules"
    for expected in [
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_down_blocks_0_resnets_1_conv2",
        "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
        "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
        "lora_unet_down_blocks_0_downsamplers_0_conv",
        "lora_unet_up_blocks_0_upsamplers_0_conv",
        "lora_unet_mid_block_resnets_1_conv2",
    ]:
        assert expected in unet
    weights = net.weights()
    assert weights["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].shape == (1, 320, 3, 3)
    assert weights["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"].shape == (320, 1, 1, 1)
    assert not any(n.startswith(("lora_unet_conv_in", "lora_unet_time_embedding")) for n in unet)


def test_sdxl_default_targets_use_sgm_names_and_te1_te2(sdxl):
    net = create_network(sdxl, "networks.lora", 1, 1)
    assert net.counts() == {"unet": 722, "text_encoder": 72, "text_encoder_2": 192}
    unet = names(net, "unet")
    for expected in [
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
        "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
        "lora_unet_middle_block_1_transformer_blocks_9_attn1_to_out_0",
        "lora_unet_middle_block_1_proj_in",
        "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_q",
        "lora_unet_output_blocks_5_1_proj_out",
    ]:
        assert expected in unet
    pattern = re.compile(
        r"lora_unet_(input_blocks_[4578]|middle_block|output_blocks_[0-5])_1_"
        r"(proj_in|proj_out|transformer_blocks_\d_(attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2))"
    )
    assert all(pattern.fullmatch(n) for n in unet)
    te1, te2 = names(net, "text_encoder"), names(net, "text_encoder_2")
    assert all(n.startswith("lora_te1_text_model_encoder_layers_") for n in te1)
    assert all(n.startswith("lora_te2_text_model_encoder_layers_") for n in te2)
    # A1111 patches OpenCLIP's fused in_proj only when q, k, v and out are all present
    for layer in range(32):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert f"lora_te2_text_model_encoder_layers_{layer}_self_attn_{proj}" in te2


def test_sdxl_conv_names_are_sgm(sdxl):
    net = create_network(sdxl, "networks.lora", 1, 1, {"conv_dim": 1}, network_train_unet_only=True)
    unet = names(net, "unet")
    for expected in [
        "lora_unet_input_blocks_1_0_in_layers_2",
        "lora_unet_input_blocks_1_0_out_layers_3",
        "lora_unet_input_blocks_1_0_emb_layers_1",
        "lora_unet_input_blocks_4_0_skip_connection",
        "lora_unet_input_blocks_3_0_op",
        "lora_unet_output_blocks_2_2_conv",
        "lora_unet_middle_block_2_in_layers_2",
    ]:
        assert expected in unet
    assert not any("down_blocks" in n or "resnets" in n for n in unet)


def test_block_indices_follow_sd_scripts():
    assert block_index("input_blocks.1.1.proj_in", SD1) == 1
    assert block_index("middle_block.1.proj_in", SD1) == 12
    assert block_index("output_blocks.11.1.proj_in", SD1) == 24
    assert block_index("input_blocks.4.1.proj_in", SDXL) == 5
    assert block_index("middle_block.1.proj_in", SDXL) == 11
    assert block_index("output_blocks.8.0.skip_connection", SDXL) == 21
    assert block_index("time_embed.0", SDXL) == 0
