"""Load `.ckpt`/`.pt` pickles without running code from them.

A pickle can name any Python function and have it called while loading; a model file from the
internet must not get that power. This module is passed to `torch.load` as its pickle module:
tensors, storages and plain containers are rebuilt, the bookkeeping objects that training
frameworks leave in checkpoints (Lightning callbacks, OmegaConf configs) become inert stubs, and
anything else stops the load with an error that names it.
"""

from __future__ import annotations

import pickle
from pickle import *  # noqa: F403  (torch.load expects the whole pickle module interface)

from ..errors import UnsafeFileError

_PLAIN_TYPES = {"set", "frozenset", "dict", "list", "tuple", "slice", "int", "float", "str", "bytes", "bool"}

_ALLOWED = {
    "torch._utils": {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_device_tensor_from_numpy",
    },
    "torch": {"Size", "device"},
    "collections": {"OrderedDict", "defaultdict"},
    # Python 2 pickles name the builtins module `__builtin__`
    "builtins": _PLAIN_TYPES,
    "__builtin__": _PLAIN_TYPES,
    "_codecs": {"encode"},
    "numpy.core.multiarray": {"scalar", "_reconstruct"},
    "numpy._core.multiarray": {"scalar", "_reconstruct"},
    "numpy": {"dtype", "ndarray"},
}

# Objects of these packages carry training bookkeeping, never weights: replaced by stubs.
_STUBBED = ("pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "__main__", "ldm")


class Stub:
    """Stands in for an object the file holds but lorakit never needs."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


def _stub_class(module: str, name: str) -> type:
    return type(name, (Stub,), {"__module__": f"lorakit_stub.{module}"})


def _torch_attribute(name: str):
    import torch

    value = getattr(torch, name, None)
    if isinstance(value, torch.dtype):
        return value
    return None


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and (dtype := _torch_attribute(name)) is not None:
            return dtype
        if module.split(".")[0] in _STUBBED:
            return _stub_class(module, name)
        raise UnsafeFileError(
            f"the file asks to call '{module}.{name}' while loading. Model files do not need that; "
            "lorakit refuses to run code from a file. Use a .safetensors version of this model."
        )


def load(file, **kwargs):  # noqa: F811  (replaces pickle.load from the star import)
    return Unpickler(file, **kwargs).load()
