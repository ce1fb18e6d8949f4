"""`lorakit train` end to end on the tiny models: every family x every algorithm."""

import json

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_folder_dataset, write_config

from lorakit.cli.main import main
from lorakit.networks import load_network
from lorakit.training.config import load_config
from lorakit.training.recipe import train

ALGORITHMS = {
    "lora": 'network_module = "networks.lora"\n',
    "locon": 'network_module = "networks.lora"\nnetwork_args = ["conv_dim=2", "conv_alpha=1"]\n',
    "loha": 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=loha", "conv_dim=2"]\n',
    "lokr": 'network_module = "lycoris.kohya"\nnetwork_args = ["algo=lokr", "factor=4"]\n',
    "dylora": 'network_module = "networks.dylora"\nnetwork_args = ["unit=2"]\n',
}

CASES = [(family, algo) for family in ("sd1", "sd2", "sdxl") for algo in ALGORITHMS]


@pytest.mark.parametrize(("family", "algo"), CASES)
def test_train_every_family_and_algorithm(tiny_checkpoints, tmp_path, family, algo):
    train_dir = make_folder_dataset(tmp_path, images=2, repeats=1)
    # half the cases use the kohya folder tree, half the sd-scripts dataset TOML inline
    use_toml = (CASES.index((family, algo)) % 2) == 1
    if use_toml:
        dataset = (
            '[general]\ncaption_extension = ".txt"\n[[datasets]]\nresolution = 64\nbatch_size = 1\n'
            f'[[datasets.subsets]]\nimage_dir = "{(train_dir / "1_sks star").as_posix()}"\nnum_repeats = 1\n'
        )
    else:
        dataset = (
            f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        )
    body = (
        ALGORITHMS[algo]
        + "network_dim = 4\nnetwork_alpha = 4\nlearning_rate = 1e-3\nmax_train_epochs = 1\nseed = 3\n"
        + f'output_dir = "{(tmp_path / "out").as_posix()}"\noutput_name = "x"\nlog_with = "none"\n'
    )
    config = write_config(tmp_path / "config.toml", tiny_checkpoints[family], body + dataset)
    result = train(load_config(config), quiet=True)

    assert result.steps == result.planned_steps == 2  # 2 images x 1 repeat x 1 epoch / batch 1
    assert json.loads(result.record.read_text())["status"] == "finished"
    tensors = load_file(result.final_file)
    assert all(torch.isfinite(t).all() for t in tensors.values())
    loaded = load_network(result.final_file)
    assert loaded.format == "kohya" and set(loaded.modules) == set(result.network.layers)
    own = result.network.state_dict()
    assert all(torch.equal(tensors[k], own[k].to(tensors[k].dtype)) for k in tensors)
    # every algorithm starts with a zero delta (one factor is zero); training must have moved it
    moved = sum(d.abs().sum().item() for d in result.network.deltas().values())
    assert moved > 0, "the saved network is still at its initial (zero-delta) state"


def test_cli_train_prints_the_plan(tiny_checkpoints, tmp_path, capsys):
    train_dir = make_folder_dataset(tmp_path, images=2, repeats=2)
    config = write_config(
        tmp_path / "c.toml",
        tiny_checkpoints["sd1"],
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        f'max_train_epochs = 2\noutput_dir = "{(tmp_path / "o").as_posix()}"\nlog_with = "none"\n'
        "save_every_n_epochs = 1\nnetwork_alpha = 8\nnetwork_dim = 4\nxformers = true\n",
    )
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "2 images x 2 repeats = 4 per epoch" in text
    assert "total steps:      8" in text and "= 4 x 2 / 1 = 8" in text
    assert "network_alpha (8) is larger than network_dim (4)" in text
    assert "'xformers' is ignored" in text
    assert (tmp_path / "o" / "lora-000001.safetensors").exists() and (
        tmp_path / "o" / "lora.safetensors"
    ).exists()
    assert (tmp_path / "o" / "lora-loss.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2] and len(record["losses"]) == 8


def test_bf16_checkpointing_accumulation_and_loss_options(tiny_checkpoints, tmp_path):
    """bf16 autocast on the CPU, gradient checkpointing (the LoRA must still get gradients through
    the recomputed blocks), gradient accumulation, and the noise/loss options together."""
    train_dir = make_folder_dataset(tmp_path, images=4, repeats=1)
    body = (
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        "network_dim = 4\nlearning_rate = 1e-3\nmax_train_epochs = 1\nseed = 2\n"
        'mixed_precision = "bf16"\ngradient_checkpointing = true\ngradient_accumulation_steps = 2\n'
        "noise_offset = 0.05\nmultires_noise_iterations = 4\nip_noise_gamma = 0.1\nmin_snr_gamma = 5\n"
        'loss_type = "huber"\nzero_terminal_snr = true\nclip_skip = 2\nmax_token_length = 150\n'
        f'output_dir = "{(tmp_path / "out").as_posix()}"\nlog_with = "none"\n'
    )
    config = write_config(tmp_path / "config.toml", tiny_checkpoints["sd1"], body)
    result = train(load_config(config), quiet=True)
    assert result.steps == result.planned_steps == 2  # 4 batches, 2 accumulated per step
    assert result.model.unet.dtype == torch.bfloat16
    assert next(result.network.parameters()).dtype == torch.float32  # trainable weights stay fp32
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    ups = {n: p for n, p in result.network.named_parameters() if n.endswith("lora_up.weight")}
    # clip_skip = 2 reads the text encoder's second-to-last layer, so its last layer (of 2) cannot learn
    unused = {n for n in ups if n.startswith("lora_te_text_model_encoder_layers_1_")}
    assert len(unused) == 6
    still = [n for n, p in ups.items() if n not in unused and p.abs().sum().item() == 0]
    assert not still, f"{len(still)} modules got no gradient: {still[:3]}"
    assert all(ups[n].abs().sum().item() == 0 for n in unused)
