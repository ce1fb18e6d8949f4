"""A1111's hypernetworks: for each attention width, two small MLPs that change the input of the
attention's key and value projections, `x + mlp(x) × multiplier` (SD1: the text context of the
cross-attentions, width 768, and the image features of the self-attentions, 320/640/1280).

The math and the layer order are A1111's (`modules/hypernetworks/hypernetwork.py`), so the
state dicts have its keys (`linear.0.weight`, ... with activations, layer norms and dropouts
taking their places in the Sequential), and the `.pt` file is its layout:

    {768: (k_state_dict, v_state_dict), 320: (...), ...,            integer keys: the widths
     "layer_structure": [1, 2, 1], "activation_func": "linear", "is_layer_norm": False,
     "weight_initialization": "Normal", "use_dropout": False, "dropout_structure": [0, 0, 0],
     "last_layer_dropout": False, "activate_output": False, "step": 500, "name": "...",
     "sd_checkpoint": "<short hash>", "sd_checkpoint_name": "...", "optional_info": None}

Files are read with lorakit's safe unpickler: they hold only tensors and plain values.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from ..models.checkpoint_file import read_pickle
from ..utils.files import atomic_path
from .errors import NetworkError
from .file import resolve_precision

ACTIVATIONS: dict[str, type[nn.Module]] = {
    name.lower(): cls
    for name, cls in inspect.getmembers(torch.nn.modules.activation)
    if inspect.isclass(cls) and cls.__module__ == "torch.nn.modules.activation"
}
ACTIVATIONS.update(
    {"linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish,
     "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
)  # fmt: skip
INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


def parse_dropout_structure(
    layer_structure: Sequence[float], use_dropout: bool, last_layer_dropout: bool
) -> list[float]:
    """A1111's dropout values for a layer structure: 0 before the first layer and after the
    last, 0.3 after the hidden ones (and after the last hidden one only with last_layer_dropout)."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    return [0.0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0.0, 0.0]


@dataclass(frozen=True)
class HypernetworkOptions:
    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str = "linear"
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    activate_output: bool = False
    dropout_structure: tuple[float, ...] | None = None  # None: no dropout

    def __post_init__(self):
        s = self.layer_structure
        if len(s) < 2 or s[0] != 1 or s[-1] != 1:
            raise NetworkError(f"layer structure {list(s)} must start and end with 1, like [1, 2, 1].")
        if (self.activation_func or "linear").lower() not in ACTIVATIONS:
            raise NetworkError(f"unknown hypernetwork activation '{self.activation_func}'.")
        if self.weight_init not in INITS:
            raise NetworkError(
                f"unknown weight initialization '{self.weight_init}'; use one of {', '.join(INITS)}."
            )
        d = self.dropout_structure
        if d is not None and (len(d) != len(s) or d[0] != 0 or d[-1] != 0 or any(not 0 <= v < 1 for v in d)):
            raise NetworkError(
                f"dropout structure {list(d)} must have one value per layer size ({len(s)}), in [0, 1), "
                "starting and ending with 0."
            )

    @property
    def dropouts(self) -> list[float]:
        return (
            list(self.dropout_structure)
            if self.dropout_structure is not None
            else [0.0] * len(self.layer_structure)
        )


class HypernetworkModule(nn.Module):
    """A1111's module: Linear layers at width × layer_structure[i], each followed by the activation
    (the last only with activate_output), a LayerNorm and a Dropout when asked."""

    def __init__(self, dim: int, options: HypernetworkOptions):
        super().__init__()
        self.multiplier = 1.0
        s, dropouts, act = (
            options.layer_structure,
            options.dropouts,
            (options.activation_func or "linear").lower(),
        )
        layers: list[nn.Module] = []
        for i in range(len(s) - 1):
            layers.append(nn.Linear(int(dim * s[i]), int(dim * s[i + 1])))
            if act != "linear" and (i < len(s) - 2 or options.activate_output):
                layers.append(ACTIVATIONS[act]())
            if options.add_layer_norm:
                layers.append(nn.LayerNorm(int(dim * s[i + 1])))
            if dropouts[i + 1] > 0:
                layers.append(nn.Dropout(p=dropouts[i + 1]))
        self.linear = nn.Sequential(*layers)
        self._initialise(options.weight_init, act)

    @torch.no_grad()
    def _initialise(self, how: str, activation: str) -> None:
        """A1111's initialisations; LayerNorms take N(0, 0.01) weights like "Normal" (as A1111 does)."""
        nonlinearity = "leaky_relu" if activation == "leakyrelu" else "relu"
        for layer in self.linear:
            if not isinstance(layer, (nn.Linear, nn.LayerNorm)):
                continue
            w, b = layer.weight, layer.bias
            if how == "Normal" or isinstance(layer, nn.LayerNorm):
                nn.init.normal_(w, mean=0.0, std=0.01)
                nn.init.normal_(b, mean=0.0, std=0)
            else:
                {
                    "XavierUniform": nn.init.xavier_uniform_,
                    "XavierNormal": nn.init.xavier_normal_,
                    "KaimingUniform": lambda t: nn.init.kaiming_uniform_(t, nonlinearity=nonlinearity),
                    "KaimingNormal": lambda t: nn.init.kaiming_normal_(t, nonlinearity=nonlinearity),
                }[how](w)
                nn.init.zeros_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) * (self.multiplier if not self.training else 1.0)


def attention_widths(model) -> list[int]:
    """The input widths of the U-Net's key/value projections (SD1: 320, 640, 768, 1280)."""
    return sorted({m.to_k.in_features for m in model.unet.modules() if isinstance(m, Attention)})


class Hypernetwork(nn.Module):
    """(k, v) modules per width; `apply_to(model)` hooks them before every key and value
    projection whose input has one of the widths."""

    kind = "hypernetwork"

    def __init__(self, sizes: Sequence[int], options: HypernetworkOptions, name: str = "hypernetwork"):
        super().__init__()
        self.options, self.name, self.step = options, name, 0
        self.sd_checkpoint: str | None = None
        self.sd_checkpoint_name: str | None = None
        self.layers = nn.ModuleDict(
            {
                str(int(size)): nn.ModuleList([HypernetworkModule(int(size), options) for _ in "kv"])
                for size in sizes
            }
        )
        self._hooks: list = []

    @property
    def sizes(self) -> list[int]:
        return [int(size) for size in self.layers]

    def set_multiplier(self, multiplier: float) -> Hypernetwork:
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self

    # ---- hooking ---------------------------------------------------------------------------

    def apply_to(self, model) -> Hypernetwork:
        for attention in (m for m in model.unet.modules() if isinstance(m, Attention)):
            pair = (
                self.layers[str(attention.to_k.in_features)]
                if str(attention.to_k.in_features) in self.layers
                else None
            )
            if pair is None:
                continue
            for projection, module in ((attention.to_k, pair[0]), (attention.to_v, pair[1])):
                self._hooks.append(projection.register_forward_pre_hook(_before(module)))
        if not self._hooks:
            raise NetworkError(
                f"the hypernetwork's widths {self.sizes} match no attention of this model (its widths: "
                f"{attention_widths(model)}); it was made for another model family."
            )
        return self

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    # ---- checks and the file ---------------------------------------------------------------

    @torch.no_grad()
    def weight_problem(self, limit: float = 1e3) -> str | None:
        for name, param in self.named_parameters():
            if not torch.isfinite(param).all():
                return f"{name} holds NaN or infinite values"
            if param.abs().max().item() > limit:
                return f"{name} reaches {param.abs().max().item():.3g}"
        return None

    def a1111_dict(self, dtype: torch.dtype | None = None) -> dict:
        o = self.options
        dropouts = o.dropouts
        data: dict = {}
        for size, (k, v) in self.layers.items():
            data[int(size)] = tuple(
                OrderedDict(
                    (key, t.detach().to("cpu", dtype or t.dtype).clone()) for key, t in m.state_dict().items()
                )
                for m in (k, v)
            )
        data.update(
            step=self.step, name=self.name, layer_structure=list(o.layer_structure),
            activation_func=o.activation_func, is_layer_norm=o.add_layer_norm, weight_initialization=o.weight_init,
            sd_checkpoint=self.sd_checkpoint, sd_checkpoint_name=self.sd_checkpoint_name,
            activate_output=o.activate_output, use_dropout=any(dropouts), dropout_structure=dropouts,
            last_layer_dropout=len(dropouts) > 2 and dropouts[-2] != 0, optional_info=None,
        )  # fmt: skip
        return data

    def save(self, path, metadata: Mapping[str, str] | None = None, precision=None, modelspec=None) -> Path:
        """Write A1111's `.pt` (atomically). `metadata`'s ss_steps becomes the file's step."""
        path = Path(path)
        if metadata and metadata.get("ss_steps"):
            self.step = int(metadata["ss_steps"])
        self.name = path.stem
        with atomic_path(path) as tmp:
            torch.save(self.a1111_dict(resolve_precision(precision)), tmp)
        return path


def _before(module: HypernetworkModule):
    def hook(projection, args):
        x = args[0]
        weight = next(module.parameters())
        return (module(x.to(weight.dtype)).to(x.dtype), *args[1:])

    return hook


def from_a1111(data: Mapping, source: str = "the file") -> Hypernetwork:
    """A Hypernetwork from A1111's dict (its own defaults where a key is missing, as its loader)."""
    structure = tuple(float(v) for v in data.get("layer_structure") or (1, 2, 1))
    dropout = data.get("dropout_structure")
    use_dropout = bool(dropout and any(dropout)) or bool(data.get("use_dropout", False))
    if dropout is None:
        dropout = parse_dropout_structure(structure, use_dropout, bool(data.get("last_layer_dropout", False)))
    options = HypernetworkOptions(
        structure, data.get("activation_func") or "linear", data.get("weight_initialization") or "Normal",
        bool(data.get("is_layer_norm", False)), bool(data.get("activate_output", True)),
        tuple(float(v) for v in dropout) if any(dropout) else None,
    )  # fmt: skip
    sizes = [k for k in data if isinstance(k, int)]
    if not sizes:
        raise NetworkError(f"{source} is not an A1111 hypernetwork (no width keys such as 768).")
    net = Hypernetwork(sizes, options, str(data.get("name") or Path(source).stem))
    for size in sizes:
        for module, state in zip(net.layers[str(size)], data[size]):
            state = {_OLD_KEYS.get(k, k): v for k, v in state.items()}
            try:
                module.load_state_dict(state)
            except RuntimeError as e:
                raise NetworkError(
                    f"{source}: the width-{size} module does not match its layer structure ({e})."
                ) from None
    net.step = int(data.get("step") or 0)
    net.sd_checkpoint, net.sd_checkpoint_name = data.get("sd_checkpoint"), data.get("sd_checkpoint_name")
    return net


_OLD_KEYS = {  # A1111's fix_old_state_dict
    "linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
    "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight",
}  # fmt: skip


def read_hypernetwork(path: str | Path) -> Hypernetwork:
    path = Path(path)
    data = read_pickle(path)
    if not isinstance(data, Mapping):
        raise NetworkError(f"{path} holds a {type(data).__name__}, not a hypernetwork.")
    net = from_a1111(data, str(path))
    return net.eval()


@dataclass
class HypernetworkSpec:
    path: str | Path
    multiplier: float = 1.0
    network: Hypernetwork | None = field(default=None, repr=False)


@contextlib.contextmanager
def applied_hypernetworks(model, specs: Sequence[HypernetworkSpec]) -> Iterator[list[Hypernetwork]]:
    """`with applied_hypernetworks(model, [HypernetworkSpec("a.pt", 0.8)]):` sample, then the hooks go."""
    nets = []
    try:
        for spec in specs:
            net = spec.network or read_hypernetwork(spec.path)
            device, dtype = model.unet.device, torch.float32
            nets.append(net.to(device, dtype).eval().set_multiplier(spec.multiplier).apply_to(model))
        yield nets
    finally:
        for net in nets:
            net.remove()
