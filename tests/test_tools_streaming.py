"""The tensor-by-tensor .safetensors reader and writer: files the reference library reads back
identically, the header it expects, and no file at all unless every tensor was written."""

import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorakit.errors import ModelError
from lorakit.tools import TensorReader, safetensors_writer


def sample_tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "a.f32": torch.randn(3, 5, generator=gen),
        "b.f16": torch.randn(7, generator=gen).half(),
        "c.bf16": torch.randn(2, 3, 4, 1, generator=gen).bfloat16(),
        "d.i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.bool": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(4.0),
        "g.empty": torch.zeros(0, 4),
        "h.f64": torch.randn(2, 2, generator=gen, dtype=torch.float64),
    }


def test_written_file_reads_back_with_safetensors(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "out.safetensors"
    layout = [(k, v.dtype, v.shape) for k, v in tensors.items()]
    with safetensors_writer(path, layout, {"title": "x", "n": 3}) as writer:
        for key, value in tensors.items():
            writer.write(key, value)
    back = load_file(path)
    assert list(back) == list(tensors) or set(back) == set(tensors)
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"title": "x", "n": "3"}
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert (8 + length) % 8 == 0  # tensor data starts 8-byte aligned


def test_reader_equals_safetensors_for_every_dtype(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "in.safetensors"
    save_file(tensors, str(path), metadata={"k": "v"})
    reader = TensorReader(path)
    assert set(reader) == set(tensors) and len(reader) == len(tensors) and reader.metadata == {"k": "v"}
    for key, value in tensors.items():
        assert reader.shape(key) == tuple(value.shape) and reader.dtype(key) == value.dtype
        got = reader[key]
        assert got.dtype == value.dtype and torch.equal(got, value), key
    got = reader["a.f32"]
    got.zero_()  # the caller owns what it reads: the next read is unaffected
    assert torch.equal(reader["a.f32"], tensors["a.f32"])


def test_reader_reads_pickle_checkpoints_too(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2, 2)}}, path)
    reader = TensorReader(path)
    assert list(reader) == ["w"] and reader.shape("w") == (2, 2) and reader.dtype("w") == torch.float32
    assert torch.equal(reader["w"], torch.ones(2, 2))


def test_reader_reports_a_truncated_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"w": torch.ones(100, 100)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError, match="truncated"):
        TensorReader(path)


def test_no_file_unless_every_tensor_is_written(tmp_path):
    path = tmp_path / "out.safetensors"
    layout = [("a", torch.float32, (2,)), ("b", torch.float32, (3,))]
    with pytest.raises(ValueError, match="never written"):
        with safetensors_writer(path, layout) as writer:
            writer.write("a", torch.zeros(2))
    assert not path.exists()
    with pytest.raises(RuntimeError, match="interrupted"):
        with safetensors_writer(path, layout) as writer:
            writer.write("a", torch.zeros(2))
            raise RuntimeError("interrupted")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_writer_refuses_tensors_out_of_layout(tmp_path):
    layout = [("a", torch.float32, (2,))]
    with pytest.raises(ValueError, match="expected tensor a F32 \\[2\\] next, got a torch.float16"):
        with safetensors_writer(tmp_path / "x.safetensors", layout) as writer:
            writer.write("a", torch.zeros(2, dtype=torch.float16))
    with pytest.raises(ValueError, match="twice"):
        with safetensors_writer(tmp_path / "y.safetensors", layout * 2):
            pass
