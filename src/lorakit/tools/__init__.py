"""Post-processing of trained files: merge, resize, extract (SuperMerger's and sd-scripts' tools).

`merge` bakes LoRAs of any algorithm into a checkpoint, streamed tensor by tensor so an SDXL
merge stays far below the model's size in memory, or combines LoRAs into one (sd-scripts'
same-rank merge, an exact concatenation, or an SVD re-factorisation). `resize` lowers a LoRA's
rank by SVD with the strength unchanged; `extract` makes a LoRA from two checkpoints.
`streaming` reads and writes .safetensors files one tensor at a time; `svd` holds the rank rules.
"""

from .extract import ExtractReport, extract_lora
from .merge import CheckpointMerge, merge_into_checkpoint
from .merge_loras import LoraMerge, merge_loras
from .resize import ModuleResize, ResizeReport, resize_lora
from .specs import LoraSpec, parse_lora_spec
from .streaming import SafetensorsWriter, TensorReader, safetensors_writer
from .svd import DYNAMIC_METHODS, choose_rank

__all__ = [
    "DYNAMIC_METHODS",
    "CheckpointMerge",
    "ExtractReport",
    "LoraMerge",
    "LoraSpec",
    "ModuleResize",
    "ResizeReport",
    "SafetensorsWriter",
    "TensorReader",
    "choose_rank",
    "extract_lora",
    "merge_into_checkpoint",
    "merge_loras",
    "parse_lora_spec",
    "resize_lora",
    "safetensors_writer",
]
