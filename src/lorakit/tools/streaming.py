"""Reading and writing .safetensors files one tensor at a time, in bounded memory.

Reading goes through plain file reads into a fresh buffer rather than a memory map: pages of a
mapped file that have been touched stay resident (and count in the process's RSS) until the map
is closed, so reading every tensor of a 7 GB SDXL file through a map ends with 7 GB resident.
A plain read leaves the data in the kernel's page cache, which the kernel reclaims at will.

Writing computes the whole header first (each tensor's dtype and shape are known before any
data is produced), then appends the data tensor by tensor into a temporary file that is
renamed over the target only once every tensor is in: the output is never held in memory and
an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from ..errors import ModelError
from ..models.checkpoint_file import TensorFile
from ..utils.files import atomic_path

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class TensorReader(Mapping[str, torch.Tensor]):
    """Tensor name -> tensor, each read from disk when asked for and owned by the caller.

    .safetensors files are read with plain reads (see the module docstring); .ckpt files fall
    back to `TensorFile`, whose pickle format has no per-tensor layout to read from.
    """

    def __init__(self, path: str | Path):
        self._handle = None
        self.file = TensorFile(path)  # validates (truncation, damage) with lorakit's messages
        self.path = self.file.path
        self.metadata = dict(self.file.metadata)
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] | None = None
        if self.file.is_safetensors:
            self._read_header()

    def _read_header(self) -> None:
        with open(self.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        self._data_start = 8 + length
        entries = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in DTYPES:
                raise ModelError(
                    f"{self.path}: tensor {key} has dtype {info['dtype']}, which lorakit cannot read."
                )
            begin, end = info["data_offsets"]
            entries[key] = (DTYPES[info["dtype"]], tuple(info["shape"]), begin, end)
        self._entries = entries

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._entries is None:
            return self.file[key]
        dtype, shape, begin, end = self._entries[key]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            if self._handle is None:
                self._handle = open(self.path, "rb")  # noqa: SIM115  (kept open across reads)
            self._handle.seek(self._data_start + begin)
            got = self._handle.readinto(buffer.numpy())
            if got != end - begin:
                raise ModelError(f"{self.path}: tensor {key} is cut short; the file is truncated or damaged.")
        return buffer.view(dtype).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries if self._entries is not None else self.file)

    def __len__(self) -> int:
        return len(self._entries if self._entries is not None else self.file)

    def __contains__(self, key: object) -> bool:
        return key in (self._entries if self._entries is not None else self.file)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._entries is not None:
            return self._entries[key][1]
        return self.file.shape(key)

    def dtype(self, key: str) -> torch.dtype:
        if self._entries is not None:
            return self._entries[key][0]
        return self.file[key].dtype

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __del__(self):
        self.close()


Layout = Sequence[tuple[str, torch.dtype, Sequence[int]]]


class SafetensorsWriter:
    """Appends tensors, in the order of the layout given up front, after a precomputed header."""

    def __init__(self, handle, layout: Layout, metadata: Mapping[str, str] | None, target: Path):
        self._handle = handle
        self._target = target
        self._expected = [(key, dtype, tuple(int(d) for d in shape)) for key, dtype, shape in layout]
        self._next = 0
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        seen = set()
        for key, dtype, shape in self._expected:
            if key in seen:
                raise ValueError(f"tensor {key} appears twice in the layout of {target}")
            seen.add(key)
            if dtype not in DTYPE_NAMES:
                raise ValueError(f"tensor {key}: dtype {dtype} cannot be stored in a .safetensors file")
            size = math.prod(shape) * dtype.itemsize
            header[key] = {
                "dtype": DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._expected):
            raise ValueError(f"{self._target}: tensor {key} is one more than the layout holds")
        name, dtype, shape = self._expected[self._next]
        if key != name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(
                f"{self._target}: expected tensor {name} {DTYPE_NAMES[dtype]} {list(shape)} next, got {key} "
                f"{tensor.dtype} {list(tensor.shape)}"
            )
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        if data.numel():
            self._handle.write(memoryview(data.view(torch.uint8).numpy()))
        self._next += 1

    @property
    def remaining(self) -> list[str]:
        return [key for key, _, _ in self._expected[self._next :]]


@contextlib.contextmanager
def safetensors_writer(
    path: str | Path, layout: Layout, metadata: Mapping[str, str] | None = None
) -> Iterator[SafetensorsWriter]:
    """`with safetensors_writer(path, [(key, dtype, shape), ...], metadata) as w: w.write(key, t)`.

    The file appears at `path` only if every tensor of the layout was written and no exception
    escaped the block.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer = SafetensorsWriter(handle, layout, metadata, path)
        yield writer
        if writer.remaining:
            raise ValueError(
                f"{path}: {len(writer.remaining)} tensors were never written (first: {writer.remaining[0]})"
            )
