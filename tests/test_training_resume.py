"""Resume, collapse detection and several processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_folder_dataset, write_config

from lorakit.runs import RunRecord
from lorakit.training import recipe
from lorakit.training.config import load_config
from lorakit.training.recipe import train
from lorakit.training.watch import TrainingCollapsed


def _config(tmp_path, checkpoint, out, extra=""):
    train_dir = make_folder_dataset(tmp_path, images=2, repeats=1)
    return write_config(
        tmp_path / f"{out}.toml",
        checkpoint,
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        "network_dim = 4\nnetwork_alpha = 4\nlearning_rate = 1e-3\nmax_train_epochs = 3\nseed = 7\n"
        'lr_scheduler = "cosine"\nnetwork_dropout = 0.1\nnoise_offset = 0.05\nshuffle_caption = true\n'
        f'save_every_n_epochs = 1\nsave_state = true\noutput_dir = "{(tmp_path / out).as_posix()}"\n'
        'output_name = "r"\nlog_with = "none"\n' + extra,
    )


def test_resumed_run_equals_the_uninterrupted_run(tiny_checkpoints, tmp_path, monkeypatch):
    whole = train(load_config(_config(tmp_path, tiny_checkpoints["sd1"], "whole")), quiet=True)

    original = RunRecord.add_epoch

    def crash_after_epoch_1(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt  # as if the machine went down right after epoch 1 was saved

    monkeypatch.setattr(RunRecord, "add_epoch", crash_after_epoch_1)
    config_path = _config(tmp_path, tiny_checkpoints["sd1"], "parts")
    with pytest.raises(KeyboardInterrupt):
        train(load_config(config_path), quiet=True)
    monkeypatch.setattr(RunRecord, "add_epoch", original)
    assert (tmp_path / "parts" / "r-000001-state" / "train_state.json").exists()
    resumed = train(load_config(config_path, {"resume": "auto"}), quiet=True)

    assert resumed.steps == whole.steps == 6
    state = json.loads((tmp_path / "parts" / "r-state" / "train_state.json").read_text())
    assert (state["current_epoch"], state["current_step"]) == (4, 6)
    a, b = load_file(whole.final_file), load_file(resumed.final_file)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    record = json.loads(resumed.record.read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3] and len(record["losses"]) == 6


def test_nan_loss_stops_the_run_and_keeps_the_last_good_file(tiny_checkpoints, tmp_path):
    # epoch 1 (2 steps) trains at lr 1e-3 and is saved; then the rate jumps to 1e12 and blows the
    # network up (the schedule is torch's MultiStepLR through lr_scheduler_type)
    absurd = {
        "learning_rate": 1e-3,
        "lr_scheduler_type": "torch.optim.lr_scheduler.MultiStepLR",
        "lr_scheduler_args": ["milestones=[2]", "gamma=1e15"],
        "max_grad_norm": 0,
    }
    config = load_config(
        _config(tmp_path, tiny_checkpoints["sd1"], "nan"), {**absurd, "max_train_epochs": 50}
    )
    with pytest.raises(
        TrainingCollapsed, match=r"the loss became (nan|inf) at step \d+; training stopped"
    ) as info:
        train(config, quiet=True)
    message = str(info.value)
    assert "r-000001.safetensors" in message and "lower learning rate" in message and "bf16" in message
    good = load_file(tmp_path / "nan" / "r-000001.safetensors")
    assert all(torch.isfinite(t).all() for t in good.values())
    record = json.loads((tmp_path / "nan" / "run.json").read_text())
    assert record["status"] == "collapsed"
    assert not (tmp_path / "nan" / "r.safetensors").exists()


def test_two_processes_end_with_identical_weights(tiny_checkpoints, tmp_path):
    config = _config(tmp_path, tiny_checkpoints["sd1"], "ddp").as_posix()
    script = tmp_path / "ddp.py"
    script.write_text(
        "import os, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from safetensors.torch import save_file\n"
        "from lorakit.training.config import load_config\n"
        "from lorakit.training.recipe import train\n"
        "r = train(load_config(sys.argv[1], {'save_state': False}), quiet=True)\n"
        "rank = os.environ['RANK']\n"
        "save_file({k: v.contiguous() for k, v in r.network.state_dict().items()}, sys.argv[2] + f'/rank{rank}.safetensors')\n"
        "print('steps', r.steps, r.planned_steps)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(recipe.__file__).parents[2]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        str(script),
        config,
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        result.stdout.count("steps 3 3") == 2
    )  # 2 batches per epoch shared by 2 processes: 1 step each, 3 epochs
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_up.weight") and a[k].abs().sum() > 0 for k in a)
