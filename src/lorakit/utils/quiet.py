"""Third-party messages that say nothing to a lorakit user, dropped one by one (the logger that
emits it and the words it starts with), so that every other warning of those libraries still
shows. Installed by `lorakit.models` on import (library use: the web UI, notebooks) and by the
command line before anything else is imported."""

from __future__ import annotations

import logging
import os
import re
import sys

# (logger, message pattern, why it says nothing to a lorakit user)
NOISE: tuple[tuple[str, str, str], ...] = (
    (
        "bitsandbytes.backends.cpu.ops",
        r"^Failed to load CPU gemm_4bit_forward from kernels-community",
        "bitsandbytes on a CPU looks for a 4-bit kernel on import; lorakit uses only its 8-bit optimizers",
    ),
    (
        "bitsandbytes.cextension",
        r"^The installed version of bitsandbytes was compiled without GPU support",
        "said on every import on a CPU; choosing AdamW8bit there fails with lorakit's own message",
    ),
    (
        "diffusers.models.modeling_utils",
        r"^There are modules in \w+ that should be kept in float32: \[\]",
        "said on every .to(dtype) of a model with no such modules (the list is empty)",
    ),
    (
        "transformers.utils.import_utils",
        r"requires torchvision \(not installed\); falling back to",
        "about image processors for safety checkers and captioners, which lorakit never uses",
    ),
)


class DropMessage(logging.Filter):
    """Drops the records whose message matches `pattern`; lets every other record through."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Install the NOISE filters (once per logger and message), and turn off the progress bars of
    the Hugging Face libraries ("Loading weights", "Writing model shards": a small model's
    tensors, never a download, since lorakit downloads nothing) unless the environment asks for
    them (HF_HUB_DISABLE_PROGRESS_BARS=0)."""
    for name, pattern, _ in NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessage) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(DropMessage(pattern))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by libraries imported later
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].strip().lower() in ("1", "true", "yes", "on"):
        transformers_logging = sys.modules.get("transformers.utils.logging")  # imported already
        if transformers_logging is not None:
            transformers_logging.disable_progress_bar()
