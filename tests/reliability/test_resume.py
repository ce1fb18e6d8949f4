"""Resume continues this run and no other, from any moment, exactly."""

import json
import signal

import pytest
import torch
from faultkit import write_config
from safetensors.torch import load_file

from lorakit.training import recipe
from lorakit.training.checkpointing import StateError
from lorakit.training.config import load_config
from lorakit.training.recipe import train


def test_resume_auto_never_takes_another_runs_state(tmp_path):
    config = write_config(tmp_path, epochs=1)
    train(load_config(config, {"output_name": "f-v2"}), quiet=True)
    assert (tmp_path / "out" / "f-v2-state").is_dir()
    # 'f' is a prefix of 'f-v2': the old lookup by prefix resumed the other run's optimizer
    with pytest.raises(
        StateError, match="no saved state of 'f' in .* nothing was trained.*save_state = true"
    ):
        train(load_config(config, {"resume": "auto", "overwrite": True}), quiet=True)


def test_resume_auto_passes_over_a_state_saved_with_other_settings_and_says_why(tmp_path, capsys):
    config = write_config(tmp_path, epochs=1)
    train(load_config(config), quiet=True)
    with pytest.raises(StateError, match="that belongs to this run"):
        train(load_config(config, {"resume": "auto", "network_dim": 8}))
    out = capsys.readouterr().out
    assert "resume: passed over f-state: saved with network_dim 4 (this run: 8)" in out


def test_resume_without_any_state_stops_and_says_how_to_get_one(tmp_path):
    config = write_config(tmp_path, epochs=1)
    with pytest.raises(StateError, match="nothing to continue and nothing was trained.*save_state = true"):
        train(load_config(config, {"resume": "auto"}), quiet=True)
    assert not (tmp_path / "out" / "run.json").exists()  # nothing written, nothing overwritten


def _interrupt_at(monkeypatch, micro_batch: int, how: str):
    """Stop the run at its `micro_batch`-th loss (mid-accumulation for odd numbers): with a real
    SIGINT (the graceful path) or a KeyboardInterrupt raised inside the step (a second Ctrl-C)."""
    original, seen = recipe.step_loss, []

    def step_loss(ctx, batch):
        seen.append(1)
        if len(seen) == micro_batch:
            if how == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return original(ctx, batch)

    monkeypatch.setattr(recipe, "step_loss", step_loss)


@pytest.mark.parametrize(
    ("kind", "micro_batch", "how"),
    [("augmented", 7, "signal"), ("augmented", 9, "raise"), ("cached", 4, "signal")],
)
def test_a_run_stopped_at_any_moment_resumes_exactly(tmp_path, monkeypatch, kind, micro_batch, how):
    whole = train(load_config(write_config(tmp_path / "whole", kind, epochs=2)), quiet=True)
    config = write_config(tmp_path / "parts", kind, epochs=2)
    _interrupt_at(monkeypatch, micro_batch, how)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(config), quiet=True)
    monkeypatch.undo()
    record = json.loads((tmp_path / "parts" / "out" / "run.json").read_text())
    assert record["status"] == "interrupted"
    resumed = train(load_config(config, {"resume": "auto"}), quiet=True)
    assert resumed.losses == whole.losses  # every step's loss, bit for bit
    a, b = load_file(whole.final_file), load_file(resumed.final_file)
    assert all(torch.equal(a[k], b[k]) for k in a)
    mine = json.loads(resumed.record.read_text())
    theirs = json.loads(whole.record.read_text())
    assert [(e["epoch"], e["step"], e["loss"]) for e in mine["epochs"]] == [
        (e["epoch"], e["step"], e["loss"]) for e in theirs["epochs"]
    ]
    assert mine["status"] == "finished" and len(mine["resumed_at"]) == 1
