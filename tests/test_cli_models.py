"""`lorakit --help`, `inspect` and `convert` as a user runs them."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from lorakit.cli.main import COMMANDS, main


def test_help_lists_every_command_with_one_line(capsys):
    assert main([]) == 1
    out = capsys.readouterr().out
    for name in COMMANDS:
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 10, line


def test_inspect_reports_family_prediction_and_hashes(tiny_checkpoints, capsys):
    assert main(["inspect", str(tiny_checkpoints["sd2"])]) == 0
    out = capsys.readouterr().out
    assert "SD 2.x" in out and "v_prediction (stated by the file)" in out
    assert main(["inspect", "--json", str(tiny_checkpoints["sdxl"])]) == 0
    report = json.loads(capsys.readouterr().out)
    import hashlib

    digest = hashlib.sha256(tiny_checkpoints["sdxl"].read_bytes()).hexdigest()
    assert report["sha256"] == digest and report["short_hash"] == digest[:10]
    with open(tiny_checkpoints["sdxl"], "rb") as f:
        f.seek(0x100000)
        assert report["legacy_hash"] == hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    state = load_file(tiny_checkpoints["sdxl"])
    unet = sum(v.numel() for k, v in state.items() if k.startswith("model.diffusion_model."))
    assert report["parameters"]["unet"] == unet
    assert report["family"] == "SDXL" and report["precision"] == "fp32"


def test_errors_are_one_plain_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and str(bad) in err


def test_convert_both_ways_and_precision(tiny_checkpoints, tmp_path, capsys):
    src = tiny_checkpoints["sd1"]
    assert main(["convert", str(src), str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert (
        main(["convert", str(tmp_path / "d"), str(tmp_path / "back.safetensors"), "--precision", "fp16"]) == 0
    )
    a, b = load_file(src), load_file(tmp_path / "back.safetensors")
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    assert b[key].dtype == torch.float16 and torch.equal(b[key], a[key].half())
    assert "wrote single-file model" in capsys.readouterr().out


def test_offline_with_an_empty_cache(tiny_checkpoints, tmp_path):
    """A new process with no hub access and no cache loads all three families."""
    code = (
        "import sys; from lorakit.models.load import load_model\n"
        "for p in sys.argv[1:]:\n"
        "    m = load_model(p); print(m.family.name, m.tokenizers[-1]('a photo of a cat').input_ids)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf"), OMP_NUM_THREADS="1")
    paths = [str(tiny_checkpoints[f]) for f in ("sd1", "sd2", "sdxl")]
    result = subprocess.run(
        [sys.executable, "-c", code, *paths], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["sd1", "sd2", "sdxl"]
    assert all(line.endswith("[49406, 320, 1125, 539, 320, 2368, 49407]") for line in lines)
    assert not (tmp_path / "empty-hf" / "hub").exists()


# What a user sees is what lorakit writes: the library's own noise (diffusers on every cast,
# transformers about torchvision) is dropped for any caller, then the command prints its report.
QUIET_SCRIPT = """
import sys
import torch
from lorakit.cli.main import main
from lorakit.evaluation.generate import Generator
from lorakit.models.load import load_model

model = load_model(sys.argv[1])
model.unet.to(torch.bfloat16)  # diffusers: "modules ... kept in float32: []"
Generator(model)  # transformers: "CLIPImageProcessor requires torchvision"
# transformers' progress bars: "Writing model shards", "Loading weights"
assert main(["convert", sys.argv[1], sys.argv[2], "--to", "diffusers"]) == 0
assert main(["convert", sys.argv[2], sys.argv[3]]) == 0
sys.exit(main(["inspect", sys.argv[1]]))
"""


def test_model_commands_on_the_tiny_model_print_only_lorakits_lines(tmp_path):
    from lorakit.quickstart.run import tiny_model_path
    from lorakit.tools.inspect import format_inspection, inspect_file

    tiny, folder, back = str(tiny_model_path()), tmp_path / "d", tmp_path / "back.safetensors"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY") and "PROGRESS_BARS" not in k}
    done = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, tiny, str(folder), str(back)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == "\n".join(
        [
            f"loaded SD 1.x (epsilon) from {tiny}",
            f"wrote diffusers model: {folder}",
            f"loaded SD 1.x (epsilon) from {folder}",
            f"wrote single-file model: {back}",
            format_inspection(inspect_file(tiny)),
            "",
        ]
    )


def test_the_dropped_messages_are_exactly_the_listed_ones(caplog):
    import logging

    from lorakit.utils.quiet import quiet_third_party

    quiet_third_party()
    quiet_third_party()  # twice: still one filter per message
    kernels = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(kernels.filters) == 1
    cast = logging.getLogger("diffusers.models.modeling_utils")
    # (the command line sets diffusers' level to ERROR; here each logger is set to WARNING itself)
    with caplog.at_level(logging.WARNING, kernels.name), caplog.at_level(logging.WARNING, cast.name):
        kernels.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'"
        )
        kernels.warning("another bitsandbytes warning")
        cast.warning(
            "There are modules in UNet2DConditionModel that should be kept in float32: []. Casting ..."
        )
        cast.warning("There are modules in UNet2DConditionModel that should be kept in float32: ['norm']")
    assert [r.getMessage() for r in caplog.records] == [
        "another bitsandbytes warning",
        "There are modules in UNet2DConditionModel that should be kept in float32: ['norm']",
    ]
