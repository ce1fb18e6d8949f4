"""lorakit: train LoRA and LyCORIS add-on models for Stable Diffusion."""

__version__ = "0.1.0"
