"""Single file -> components -> single file must give back every tensor bit for bit."""

import pytest
import torch
from safetensors.torch import load_file

from lorakit.models.load import load_model
from lorakit.models.save import save_single_file


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_single_file_round_trip_is_bit_exact(tiny_checkpoints, tmp_path, family):
    source = tiny_checkpoints[family]
    model = load_model(source)
    out = save_single_file(model, tmp_path / "out.safetensors")
    before, after = load_file(source), load_file(out)
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_round_trip_at_half_precision_keeps_the_stored_dtype(tiny_checkpoints, tmp_path, precision):
    model = load_model(tiny_checkpoints["sd1"])
    half = save_single_file(model, tmp_path / "half.safetensors", precision=precision)
    again = save_single_file(load_model(half), tmp_path / "again.safetensors")
    a, b = load_file(half), load_file(again)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    assert a["model.diffusion_model.out.2.weight"].dtype == dtype
    assert all(torch.equal(a[k], b[k]) for k in a)
