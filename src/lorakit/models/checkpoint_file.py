"""Read the tensors of a model file (`.safetensors`, `.ckpt`, `.pt`, `.bin`) one at a time.

Single-file checkpoints are large (2 GB for SD1.5, 7 GB for SDXL in fp16). Reading tensors by
name from a memory-mapped file lets the loader build one component at a time and drop each
original tensor once converted, instead of holding the whole file in memory twice.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ModelError, UnsafeFileError
from . import safe_pickle

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


class TensorFile(Mapping[str, torch.Tensor]):
    """A read-only mapping of tensor name -> tensor, with shapes available without reading."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ModelError(f"{self.path}: no such file. Check the path (and that the download finished).")
        if self.path.is_dir():
            raise ModelError(f"{self.path} is a folder; a single model file was expected here.")
        if self.path.stat().st_size == 0:
            raise ModelError(f"{self.path}: the file is empty (0 bytes). Download it again.")
        suffix = self.path.suffix.lower()
        self.metadata: dict[str, str] = {}
        self._safe = None
        self._tensors: dict[str, torch.Tensor] | None = None
        if suffix == ".safetensors" or (suffix not in PICKLE_SUFFIXES and _looks_like_safetensors(self.path)):
            self._open_safetensors()
        else:
            self._open_pickle()

    # -- opening -------------------------------------------------------------------------

    def _open_safetensors(self) -> None:
        self._header, self._data_start = _check_safetensors_size(self.path)
        try:
            self._safe = safe_open(str(self.path), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises its own error type
            raise ModelError(
                f"{self.path} is not a readable .safetensors file ({e}). It may be damaged or a "
                "different kind of file renamed; download it again."
            ) from e
        self.metadata = dict(self._safe.metadata() or {})
        self._keys = list(self._safe.keys())

    def _open_pickle(self) -> None:
        data = read_pickle(self.path)
        if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
            data = data["state_dict"]
        if not isinstance(data, Mapping):
            raise ModelError(f"{self.path} holds a {type(data).__name__}, not a set of model weights.")
        self._tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        self._keys = list(self._tensors)

    # -- mapping interface ---------------------------------------------------------------

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._safe is not None:
            if key not in self._keys_set:
                raise KeyError(key)
            return self._safe.get_tensor(key)
        return self._tensors[key]

    @property
    def _keys_set(self) -> set[str]:
        if not hasattr(self, "_keys_cache"):
            self._keys_cache = set(self._keys)
        return self._keys_cache

    def __contains__(self, key: object) -> bool:
        return key in self._keys_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def read(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor `key` as a fresh tensor of its own, converted to `dtype` if that is given
        and the tensor is floating point. A `.safetensors` tensor is read with plain positional
        reads straight into its buffer, not through the memory map: mapped pages count in the
        process's RSS for as long as the file is open, so a 2 GB fp16 file converted to fp32
        through the map peaks at file + model, read this way at the model alone."""
        if self._safe is None:
            tensor = self._tensors[key]
            return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        if key not in self._keys_set:
            raise KeyError(key)
        info = self._header[key]
        start, end = info["data_offsets"]
        stored = _SAFETENSORS_DTYPES.get(info["dtype"])
        if stored is None:  # a dtype torch has no plain reader for: let safetensors do it
            tensor = self._safe.get_tensor(key)
            return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        convert = dtype is not None and stored.is_floating_point and dtype != stored
        # a conversion reads into one reused buffer: no freed temporaries left between the
        # model's tensors, which the allocator could not give back
        raw = self._scratch(end - start) if convert else torch.empty(end - start, dtype=torch.uint8)
        if end > start:
            _read_exactly(self._fd(), raw.numpy(), self._data_start + start)
        tensor = raw.view(stored).reshape(info["shape"])
        if convert:
            return torch.empty(info["shape"], dtype=dtype).copy_(tensor)
        return tensor

    def _scratch(self, nbytes: int) -> torch.Tensor:
        if getattr(self, "_buffer", None) is None or self._buffer.numel() < nbytes:
            self._buffer = None
            self._buffer = torch.empty(max(nbytes, 1 << 20), dtype=torch.uint8)
        return self._buffer[:nbytes]

    def close(self) -> None:
        """Drop the read buffer and the file handle (the mapping goes with the object)."""
        self._buffer = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def _fd(self) -> int:
        if getattr(self, "_file", None) is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the mapping's lifetime
        return self._file.fileno()

    @property
    def is_safetensors(self) -> bool:
        return self._safe is not None

    def shape(self, key: str) -> tuple[int, ...]:
        if self._safe is not None:
            return tuple(self._safe.get_slice(key).get_shape())
        return tuple(self._tensors[key].shape)

    def dtype_name(self, key: str) -> str:
        if self._safe is not None:
            return str(self._safe.get_slice(key).get_dtype())
        return _DTYPE_NAMES.get(self._tensors[key].dtype, str(self._tensors[key].dtype))


def read_pickle(path: Path):
    """The object a `.ckpt`/`.pt` file holds, rebuilt by lorakit's safe unpickler (tensors and plain
    containers only: a file that asks to run code is refused)."""
    try:
        return torch.load(
            path,
            map_location="cpu",
            pickle_module=safe_pickle,
            weights_only=False,
            mmap=zipfile.is_zipfile(path),
        )
    except UnsafeFileError as e:
        raise UnsafeFileError(f"{path}: refused: {e}") from None
    except Exception as e:
        raise ModelError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {e}). "
            "It may be truncated (an interrupted download) or not a model file."
        ) from e


_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def _read_exactly(fd: int, buffer, offset: int) -> None:
    """Fill `buffer` (a writable numpy byte array) from `fd` at `offset`."""
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise ModelError(f"unexpected end of file while reading a tensor at byte {offset + done}.")
        done += n


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _check_safetensors_size(path: Path) -> tuple[dict, int]:
    """Tell a truncated download apart from other damage, before the library's terse error.
    Returns the header (tensor name -> dtype, shape, data_offsets) and where the data starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelError(
                f"{path} is too short to be a .safetensors file ({size} bytes). Download it again."
            )
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > 100_000_000 or 8 + header_len > size:
            raise ModelError(
                f"{path} is not a valid .safetensors file: its header says {header_len} bytes but "
                f"the file has {size}. The file is damaged or not a safetensors file."
            )
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise ModelError(f"{path}: the .safetensors header is not valid JSON ({e}).") from e
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        missing = 8 + header_len + end - size
        raise ModelError(
            f"{path} is truncated: {missing} bytes are missing at the end "
            f"({size} of {size + missing} bytes present). The download was probably interrupted; "
            "download it again."
        )
    return header, 8 + header_len
