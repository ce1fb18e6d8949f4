"""Faults while writing (a full disk, a read-only folder), a broken network, a collapsed run:
each ends with a message in words, run.json saying what happened, and only good files called good."""

import errno
import json
import subprocess
import sys

import pytest
import torch
from faultkit import environment, weights, write_config
from safetensors import safe_open

from lorakit.training.config import load_config
from lorakit.training.recipe import train
from lorakit.training.watch import TrainingCollapsed

FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
from lorakit.cli.main import main
sys.exit(main(["train", sys.argv[1], "--quiet"]))
"""


def test_a_full_disk_stops_the_run_in_words_and_keeps_the_last_complete_file(tmp_path):
    config = write_config(tmp_path, epochs=3, network_dim=48, network_alpha=48)
    # a LoRA of rank 48 (5.0 MB) fits in 7 MB; its first state, whose optimizer file holds two
    # moments (10 MB), does not
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(config), "7000000"], env=environment(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: could not write" in result.stderr and "no space left" in result.stderr
    assert "--resume auto" in result.stderr
    out = tmp_path / "out"
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "no space left" in record["error"]
    saved = sorted(out.glob("f*.safetensors"))
    assert saved and all(weights(p) for p in saved)  # every file there is whole
    assert not list(out.rglob(".*.tmp"))  # the half-written one was removed


def test_a_read_only_folder_is_named_with_what_to_do(tmp_path, monkeypatch):
    import lorakit.networks.file as network_file

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(network_file, "save_file", refuse)
    config = load_config(write_config(tmp_path, epochs=1))
    with pytest.raises(
        Exception,
        match=r"could not write .*f-step00000001.safetensors: Read-only file system .*read-only or not yours.*output_dir",
    ):
        train(config, quiet=True)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"


def test_a_broken_network_is_never_saved_or_called_good(tmp_path):
    # lr 1e4: the weights blow up at the first step; nothing may be written as if it were a LoRA
    config = load_config(write_config(tmp_path, epochs=2), {"learning_rate": 1e4, "max_grad_norm": 0})
    with pytest.raises(TrainingCollapsed, match="No good LoRA had been saved yet") as info:
        train(config, quiet=True)
    for path in (tmp_path / "out").glob("f*.safetensors"):
        tensors = weights(path)
        assert all(torch.isfinite(t).all() and t.abs().max() < 1e3 for t in tensors.values()), path
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "collapsed" and record["last_good_file"] is None
    assert "lower learning rate" in str(info.value)


def test_a_runaway_loss_stops_before_the_nan_and_names_only_a_confirmed_file(tmp_path):
    # a healthy first epoch, then a learning rate 300x higher: the loss runs away for steps
    # before any NaN; the file saved while it ran away is not called good
    config = load_config(
        write_config(tmp_path, epochs=8),
        {
            "lr_scheduler_type": "torch.optim.lr_scheduler.MultiStepLR",
            "lr_scheduler_args": ["milestones=[6]", "gamma=1500"],
        },
    )
    with pytest.raises(TrainingCollapsed, match=r"the loss ran away") as info:
        train(config, quiet=True)
    message = str(info.value)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    good = record["last_good_file"]
    assert good is not None and f"The last good LoRA is {good}." in message
    with safe_open(good, "pt") as f:
        saved_at = int(f.metadata()["ss_steps"])
    assert saved_at <= 6  # saved before the rate jumped at step 6, and confirmed by a healthy step after
    assert "do not use it" in message  # the file saved while it ran away is named as bad


def test_dataset_problems_are_found_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import lorakit.training.setup as setup

    monkeypatch.setattr(
        setup, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded"))
    )
    config = write_config(tmp_path, epochs=1)
    (tmp_path / "train" / "2_sks shape" / "broken.png").write_bytes(b"not a picture")
    (tmp_path / "train" / "2_sks shape" / "anim.gif").write_bytes(b"GIF89a")
    with pytest.raises(Exception, match=r"broken.png") as info:
        train(load_config(config))
    assert "model loaded" not in str(info.value)
    (tmp_path / "train" / "2_sks shape" / "broken.png").unlink()
    with pytest.raises(AssertionError, match="model loaded"):
        train(load_config(config))
    assert (
        "anim.gif: not used: .gif images are not read" in capsys.readouterr().out
    )  # said, not skipped silently
