"""LoRA, LoCon, LoHa, LoKr, DyLoRA and DoRA networks: training modules, files, reading, applying.

Layout (LyCORIS-style separation): `functional` holds the delta math; `modules` the nn.Modules
that hook layers; `naming` which layers exist and their sd-scripts names; `options` the
sd-scripts/LyCORIS arguments; `network` a trainable network; `file` writing; `reading` every
format users have; `apply` strength, block weights, merge and unmerge; `report` for inspect.
"""

from .apply import MergedNetworks, NetworkSpec, applied, merge_networks, network_deltas
from .errors import NetworkError
from .network import LoRANetwork, create_network, create_network_from_weights
from .options import NetworkOptions, network_options
from .reading import ModuleWeights, NetworkFile, load_network

__all__ = [
    "LoRANetwork",
    "MergedNetworks",
    "ModuleWeights",
    "NetworkError",
    "NetworkFile",
    "NetworkOptions",
    "NetworkSpec",
    "applied",
    "create_network",
    "create_network_from_weights",
    "load_network",
    "merge_networks",
    "network_deltas",
    "network_options",
]
