"""`lorakit inspect` on LoRA files: algorithm, ranks/alphas per part and block, family, training
parameters, tags and trigger words."""

import json

import torch
from network_helpers import tiny
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.networks import create_network

TAGS = {"10_sks dog": {"sks dog": 20, "outdoors": 12, "grass": 3}, "5_sks dog": {"outdoors": 4, "smile": 7}}


def inspect(capsys, path, *extra):
    assert main(["inspect", str(path), *extra]) == 0
    return capsys.readouterr().out


def test_inspect_lorakit_locon_file(tmp_path, capsys):
    model = tiny("sd1")
    net = create_network(model, "networks.lora", 8, 4, ["conv_dim=2", "conv_alpha=1"])
    path = net.save(
        tmp_path / "dog.safetensors",
        metadata={
            "ss_output_name": "dog",
            "ss_learning_rate": "0.0001",
            "ss_optimizer": "AdamW8bit",
            "ss_steps": "1200",
            "ss_tag_frequency": json.dumps(TAGS),
            "ss_dataset_dirs": json.dumps({"10_sks dog": {"n_repeats": 10, "img_count": 20}}),
        },
        precision="fp16",
        modelspec={"trigger_phrase": "sks"},
    )
    out = inspect(capsys, path)
    assert "LoCon network (kohya format)" in out
    assert "SD 1.x (sd_v1)" in out
    assert "unet" in out and "text_encoder" in out
    assert "rank 8, conv rank 2" in out
    assert "alpha 1, 4" in out or "alpha 4, 1" in out
    assert "float16" in out
    assert "AdamW8bit" in out and "1200" in out
    assert "trigger words: sks, sks dog" in out
    assert "outdoors (16)" in out.replace("\n", " ")

    report = json.loads(inspect(capsys, path, "--json"))
    assert report["kind"] == "network"
    assert report["modules"] == {
        "unet": len([n for n in net.layers if n.startswith("lora_unet_")]),
        "text_encoder": 12,
    }
    assert report["parts"]["text_encoder"]["rank"] == "8"
    assert report["top_tags"][0] == ["sks dog", 20]


def test_inspect_shows_ranks_per_block_when_they_vary(tmp_path, capsys):
    dims = ",".join(["4"] * 12 + ["2"] + ["8"] * 12)
    net = create_network(
        tiny("sd1"), "networks.lora", 4, 1, [f"block_dims={dims}"], network_train_unet_only=True
    )
    report = json.loads(inspect(capsys, net.save(tmp_path / "b.safetensors"), "--json"))
    blocks = report["blocks"]["unet"]
    assert blocks["M00"] == "2/1"
    assert set(report["parts"]["unet"]["rank"]) == {"2", "4", "8"}


def test_inspect_full_size_sdxl_loha_keys(tmp_path, capsys):
    """A file with real SDXL names and shapes, written from the LyCORIS format."""
    g = torch.Generator().manual_seed(0)
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    tensors = {
        f"{name}.hada_w1_a": torch.randn(640, 8, generator=g),
        f"{name}.hada_w1_b": torch.randn(8, 2048, generator=g),
        f"{name}.hada_w2_a": torch.randn(640, 8, generator=g),
        f"{name}.hada_w2_b": torch.randn(8, 2048, generator=g),
        f"{name}.alpha": torch.tensor(4.0),
        f"{te2}.hada_w1_a": torch.randn(1280, 4, generator=g),
        f"{te2}.hada_w1_b": torch.randn(4, 1280, generator=g),
        f"{te2}.hada_w2_a": torch.randn(1280, 4, generator=g),
        f"{te2}.hada_w2_b": torch.randn(4, 1280, generator=g),
        f"{te2}.alpha": torch.tensor(1.0),
    }
    path = tmp_path / "xl_loha.safetensors"
    save_file(
        tensors,
        str(path),
        metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "loha"}'},
    )
    out = inspect(capsys, path)
    assert "LoHa network" in out
    assert "SDXL" in out
    assert "text_encoder_2" in out and "rank 4" in out and "rank 8" in out


def test_inspect_diffusers_format(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.randn(
            4, 768, generator=g
        ),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.randn(
            640, 4, generator=g
        ),
    }
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(path))
    report = json.loads(inspect(capsys, path, "--json"))
    assert report["format"] == "diffusers"
    assert report["family"] == "SD 1.x"
    assert report["algorithm"] == "LoRA"
    assert report["parts"]["unet"]["alpha"] == "none (scale 1)"
