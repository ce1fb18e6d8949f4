"""Shared test setup: one torch thread, no hub access, tiny checkpoints made once per session."""

import os
import tempfile

# No test may reach a model hub: an empty cache and offline mode make any attempt fail loudly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lorakit-empty-hf-home-")

import pytest  # noqa: E402
import torch  # noqa: E402

# On 2 shared cores the tiny-model steps are many times slower with 2 threads.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Paths of tiny single-file checkpoints: sd1 (epsilon), sd2 (v-prediction), sdxl."""
    from lorakit.models.tiny import write_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "sd1": write_checkpoint(folder / "tiny-sd1.safetensors", "sd1"),
        "sd2": write_checkpoint(folder / "tiny-sd2-v.safetensors", "sd2", "v_prediction"),
        "sdxl": write_checkpoint(folder / "tiny-sdxl.safetensors", "sdxl"),
    }
