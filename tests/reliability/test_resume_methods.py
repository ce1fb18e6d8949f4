"""Resume continues every training method exactly (issue 21): a run stopped mid-way and resumed
gives the same losses, step by step, and the same file as the run that was never stopped."""

import json
import signal

import pytest
import torch
from faultkit import write_config
from safetensors.torch import load_file

from lorakit.training import recipe
from lorakit.training.config import load_config
from lorakit.training.recipe import train

METHODS = {
    "dreambooth": {"training_type": "dreambooth", "learning_rate": 1e-4, "save_every_n_steps": 0},
    "textual_inversion": {"training_type": "textual_inversion", "token_string": "sks", "init_word": "circle"},
    "hypernetwork": {"training_type": "hypernetwork", "hypernetwork_layer_structure": [1, 2, 1]},
    "pivotal": {"train_embeddings": ["sks"], "num_vectors_per_token": 2},
}


def read(path):
    """The tensors of a method's file: safetensors (checkpoint, embedding, LoRA) or A1111's .pt."""
    if path.suffix == ".pt":
        data = torch.load(path, weights_only=True)
        return {
            f"{w}.{i}.{k}": v
            for w in data
            if isinstance(w, int)
            for i, s in enumerate(data[w])
            for k, v in s.items()
        }
    return load_file(path)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_resumes_exactly(tmp_path, monkeypatch, method):
    options = {**METHODS[method], "save_last_n_steps": 1, "save_last_n_steps_state": 1}
    whole = train(load_config(write_config(tmp_path / "whole", epochs=2, **options)), quiet=True)
    config = write_config(tmp_path / "parts", epochs=2, **options)
    original, seen = recipe.step_loss, []

    def step_loss(ctx, batch):  # a real Ctrl-C at the 4th step of 12
        seen.append(1)
        if len(seen) == 4:
            signal.raise_signal(signal.SIGINT)
        return original(ctx, batch)

    monkeypatch.setattr(recipe, "step_loss", step_loss)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(config), quiet=True)
    monkeypatch.undo()
    assert json.loads((tmp_path / "parts" / "out" / "run.json").read_text())["status"] == "interrupted"
    resumed = train(load_config(config, {"resume": "auto"}), quiet=True)
    assert len(whole.losses) == 12 and resumed.losses == whole.losses  # bit for bit
    assert len(json.loads(resumed.record.read_text())["resumed_at"]) == 1  # from the state, not afresh
    assert resumed.final_file.name == whole.final_file.name
    a, b = read(whole.final_file), read(resumed.final_file)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
