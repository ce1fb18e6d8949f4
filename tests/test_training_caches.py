"""What training keeps between steps and runs: the caption cache on disk, the resume checks, a
network continued with the shape of its file."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from training_helpers import make_folder_dataset, write_config

from lorakit.cli.main import main
from lorakit.errors import DatasetError
from lorakit.models import load_model
from lorakit.networks import load_network
from lorakit.training.config import load_config
from lorakit.training.recipe import train


def _config(tmp_path, checkpoint, extra="", name="c.toml"):
    train_dir = make_folder_dataset(tmp_path, images=3, repeats=1)
    return write_config(
        tmp_path / name,
        checkpoint,
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        f'learning_rate = 1e-3\nseed = 5\noutput_dir = "{(tmp_path / "o").as_posix()}"\nlog_with = "none"\n'
        + (extra or "network_dim = 4\nmax_train_epochs = 1\n"),
    )


def test_text_encoder_outputs_cached_to_disk_are_written_once_and_read_by_the_next_run(
    tiny_checkpoints, tmp_path, capsys
):
    config = _config(
        tmp_path,
        tiny_checkpoints["sdxl"],
        "network_train_unet_only = true\ncache_text_encoder_outputs_to_disk = true\nmax_train_epochs = 1\n",
    )
    assert main(["train", str(config)]) == 0
    first = capsys.readouterr().out
    assert "text encoder outputs: 3 captions encoded, 0 reused from disk" in first
    files = sorted((tmp_path / "train" / "1_sks star").glob("*_te_outputs.npz"))
    assert [f.name for f in files] == ["0_te_outputs.npz", "1_te_outputs.npz", "2_te_outputs.npz"]
    with np.load(files[0]) as npz:  # sd-scripts' SDXL keys, readable without lorakit
        assert {"hidden_state1", "hidden_state2", "pool2"} <= set(npz.files)
        width = load_model(tiny_checkpoints["sdxl"]).unet.config.cross_attention_dim
        assert npz["hidden_state1"].shape[-1] + npz["hidden_state2"].shape[-1] == width
    written = {f: f.stat().st_mtime_ns for f in files}

    assert main(["train", str(config), "--output_dir", str(tmp_path / "o2")]) == 0
    second = capsys.readouterr().out
    assert "text encoder outputs: 0 captions encoded, 3 reused from disk" in second
    assert {f: f.stat().st_mtime_ns for f in files} == written

    # a caption changed: that image alone is encoded again
    (tmp_path / "train" / "1_sks star" / "1.txt").write_text("sks, a new caption")
    assert main(["train", str(config), "--output_dir", str(tmp_path / "o3")]) == 0
    assert "text encoder outputs: 1 captions encoded, 2 reused from disk" in capsys.readouterr().out


def test_caching_text_encoder_outputs_needs_frozen_text_encoders(tiny_checkpoints, tmp_path):
    config = load_config(
        _config(
            tmp_path, tiny_checkpoints["sd1"], "cache_text_encoder_outputs = true\nmax_train_epochs = 1\n"
        )
    )
    with pytest.raises(
        Exception, match="cache_text_encoder_outputs needs frozen text encoders.*network_train_unet_only"
    ):
        train(config, quiet=True)


def test_a_resume_with_another_seed_is_refused(tiny_checkpoints, tmp_path):
    path = _config(
        tmp_path,
        tiny_checkpoints["sd1"],
        "save_state = true\nmax_train_epochs = 2\nsave_every_n_epochs = 1\nnetwork_dim = 4\n",
    )
    train(load_config(path), quiet=True)
    assert (tmp_path / "o" / "lora-000001-state").is_dir()
    with pytest.raises(DatasetError, match=r"saved with seed 5, this run has seed 6.*Resume with seed = 5"):
        train(load_config(path, {"resume": str(tmp_path / "o" / "lora-000001-state"), "seed": 6}), quiet=True)
    # the same seed resumes
    result = train(load_config(path, {"resume": str(tmp_path / "o" / "lora-000001-state")}), quiet=True)
    assert result.steps == 6 and json.loads(result.record.read_text())["status"] == "finished"


def test_dim_from_weights_takes_each_modules_rank_from_the_file(tiny_checkpoints, tmp_path):
    first = train(
        load_config(_config(tmp_path, tiny_checkpoints["sd1"], "network_dim = 8\nmax_train_epochs = 1\n")),
        quiet=True,
    )
    tensors = load_file(first.final_file)
    # shrink one module to rank 2 (as a resized LoRA has): the continued network must follow
    name = sorted({k.split(".")[0] for k in tensors if k.endswith("lora_down.weight")})[0]
    tensors[f"{name}.lora_down.weight"] = tensors[f"{name}.lora_down.weight"][:2].contiguous()
    tensors[f"{name}.lora_up.weight"] = tensors[f"{name}.lora_up.weight"][:, :2].contiguous()
    shaped = tmp_path / "shaped.safetensors"
    save_file(tensors, str(shaped))
    config = load_config(
        _config(tmp_path, tiny_checkpoints["sd1"], name="d.toml"),
        {
            "network_weights": str(shaped),
            "dim_from_weights": True,
            "output_dir": str(tmp_path / "o2"),
            "network_dim": 32,
        },
    )
    result = train(config, quiet=True)
    ranks = {n: m.rank for n, m in load_network(result.final_file).modules.items()}
    assert ranks[name] == 2 and set(ranks.values()) == {2, 8}
    own = result.network.state_dict()
    assert all(own[k].shape == v.shape for k, v in tensors.items())
    assert not torch.equal(own[f"{name}.lora_up.weight"], tensors[f"{name}.lora_up.weight"])  # it trained on
