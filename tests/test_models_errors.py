"""Files lorakit cannot train on get a message that says what the file is and what to do."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.errors import ModelError, UnsafeFileError
from lorakit.models.load import load_model


def _save(tmp_path, name, tensors):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_not_a_model(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a model, just some text that someone renamed")
    with pytest.raises(ModelError, match="not a valid .safetensors file"):
        load_model(text)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="could not be read as a PyTorch checkpoint"):
        load_model(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(empty)
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match="no model_index.json"):
        load_model(tmp_path)


def test_truncated_download(tiny_checkpoints, tmp_path):
    data = tiny_checkpoints["sd1"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"truncated: \d+ bytes are missing.*download it again"):
        load_model(cut)
    ckpt = tmp_path / "cut.ckpt"
    torch.save(load_file(tiny_checkpoints["sd1"]), ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="truncated"):
        load_model(ckpt)


def test_unknown_architecture(tmp_path):
    path = _save(
        tmp_path, "odd.safetensors", {"blocks.0.weight": torch.zeros(2), "head.bias": torch.zeros(2)}
    )
    with pytest.raises(ModelError, match=r"unknown model architecture \(first keys: blocks.0.weight"):
        load_model(path)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["model.diffusion_model.joint_blocks.0.x.weight"], "Stable Diffusion 3"),
        (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], "Flux"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "is a LoRA"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], "is a VAE file"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "U-Net without text encoders"),
        (["down_blocks.0.resnets.0.conv1.weight"], "one component of a diffusers model"),
    ],
)
def test_other_kinds_of_file_are_named(tmp_path, keys, message):
    path = _save(tmp_path, "file.safetensors", {k: torch.zeros(1) for k in keys})
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_sdxl_refiner_is_refused(tiny_checkpoints, tmp_path):
    state = load_file(tiny_checkpoints["sdxl"])
    refiner = {}
    for key, value in state.items():
        if key.startswith("conditioner.embedders.0."):
            continue
        refiner[key.replace("conditioner.embedders.1.", "conditioner.embedders.0.")] = value
    path = _save(tmp_path, "refiner.safetensors", refiner)
    with pytest.raises(ModelError, match="SDXL refiner"):
        load_model(path)


def test_inpainting_model_is_refused(tiny_checkpoints, tmp_path):
    state = dict(load_file(tiny_checkpoints["sd1"]))
    weight = state["model.diffusion_model.input_blocks.0.0.weight"]
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.cat([weight, weight, weight[:, :1]], dim=1)
    path = _save(tmp_path, "inpaint.safetensors", state)
    with pytest.raises(ModelError, match="is an inpainting model"):
        load_model(path)


def test_missing_tensor_is_reported_by_name(tiny_checkpoints, tmp_path):
    state = dict(load_file(tiny_checkpoints["sd1"]))
    del state["first_stage_model.decoder.conv_out.weight"]
    path = _save(tmp_path, "partial.safetensors", state)
    with pytest.raises(ModelError, match="tensor 'first_stage_model.decoder.conv_out.weight' is missing"):
        load_model(path)


class _Payload:
    """A pickle that runs a shell command when loaded by an unprotected loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tiny_checkpoints, tmp_path):
    marker = tmp_path / "code-ran"
    state = dict(load_file(tiny_checkpoints["sd1"]))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "payload": _Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match=r"asks to call '(posix|nt|os)\.system'.*refuses to run code"):
        load_model(path)
    assert not marker.exists()
