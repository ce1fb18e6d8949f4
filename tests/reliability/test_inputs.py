"""No command writes over one of its own inputs."""

import pytest
from network_helpers import tiny
from tools_helpers import make_lora

from lorakit.cli.main import main
from lorakit.models.tiny import write_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    model = tiny("sd1")
    return {
        "a": make_lora(model, root / "a.safetensors", seed=1),
        "b": make_lora(model, root / "b.safetensors", seed=2),
        "base": write_checkpoint(root / "base.safetensors", "sd1"),
        "tuned": write_checkpoint(root / "tuned.safetensors", "sd1", seed=5),
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["merge", "--lora", "{a}:0.5", "--lora", "{b}:0.5", "--out", "{a}"],
        ["merge", "--lora", "{a}:0.5", "--out", "{a}", "--concat"],
        ["resize", "{a}", "--new-rank", "2", "--out", "{a}"],
        ["extract", "--base", "{base}", "--tuned", "{tuned}", "--dim", "2", "--out", "{tuned}"],
        ["convert", "{base}", "{base}", "--precision", "fp16"],
        ["merge", "--model", "{base}", "--lora", "{a}", "--out", "{base}"],
    ],
    ids=["merge-loras", "merge-concat", "resize", "extract", "convert", "merge-into-model"],
)
def test_a_command_refuses_to_overwrite_its_input(files, capsys, argv):
    before = {name: path.read_bytes() for name, path in files.items()}
    assert main([a.format(**{k: str(v) for k, v in files.items()}) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("is also an input" in err or "input" in err), err
    assert {name: path.read_bytes() for name, path in files.items()} == before
