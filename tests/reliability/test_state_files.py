"""A training state is something users download and share to continue a run: loading one must
never run code, and it must hold only data formats."""

import json
import pickle

import pytest
from faultkit import run, write_config
from safetensors import safe_open


class Payload:
    """Unpickling this creates a file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    config = write_config(root, epochs=1)
    assert run(config).returncode == 0
    return config


def test_a_state_holds_only_safetensors_and_json(trained):
    state = trained.parent / "out" / "f-state"
    names = sorted(p.name for p in state.iterdir())
    assert names == [
        "network.safetensors", "optimizer.json", "optimizer.safetensors", "rng.json", "rng.safetensors",
        "scheduler.json", "train_state.json",
    ]  # fmt: skip
    for path in state.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            assert list(f.keys()) is not None
    for path in state.glob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("name", ["optimizer.pt", "rng.pt"])
def test_a_planted_pickle_is_refused_and_never_run(trained, tmp_path, name):
    state = trained.parent / "out" / "f-state"
    marker = tmp_path / "code-ran"
    (state / name).write_bytes(pickle.dumps(Payload(str(marker))))
    try:
        result = run(trained, "--resume", str(state))
    finally:
        (state / name).unlink()
    assert result.returncode == 2
    assert f"holds {name}: pickle files, which can run code when loaded" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
