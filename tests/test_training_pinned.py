"""The trained weights of fixed-seed runs, pinned: a change to the training code that is meant to
keep behaviour (a refactor, a faster path) must give the same LoRA, tensor for tensor.

The digests were computed on the code before the library-seams refactor. Float results can
differ in the last bits between CPU instruction sets, so on a CPU of another capability than
the one that made the digests the test compares against the stored reference tensors within
1e-6 instead (tests/data/pinned/*.safetensors).
"""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_helpers import make_folder_dataset, write_config

from lorakit.quickstart.demo import write_demo
from lorakit.training.config import load_config
from lorakit.training.recipe import train

TINY = Path(__file__).parents[1] / "src" / "lorakit" / "quickstart" / "lorakit-tiny.safetensors"
REFERENCE = Path(__file__).parent / "data" / "pinned"
DIGEST_CPU = "AVX512"  # torch.backends.cpu.get_cpu_capability() where the digests were made

COMMON = 'log_with = "none"\noutput_name = "pin"\n'

CASES = {
    # LoRA on U-Net and text encoder, the demo's train + reg subsets (caption dropout on reg),
    # accumulation, warm-up + cosine, noise offset, min-SNR, dropout, flips, shuffled tags
    "lora_demo": (
        "tiny",
        "dataset_config = '{demo}'\nresolution = \"32\"\nbucket_reso_steps = 32\ntrain_batch_size = 2\n"
        "gradient_accumulation_steps = 2\nmax_train_steps = 6\nseed = 11\n"
        'network_dim = 4\nnetwork_alpha = 2\nlearning_rate = 1e-3\nlr_scheduler = "cosine"\n'
        "lr_warmup_steps = 0.2\nnoise_offset = 0.05\nmin_snr_gamma = 5\nnetwork_dropout = 0.1\n"
        "flip_aug = true\nshuffle_caption = true\n",
    ),
    # LoHa on the U-Net only (frozen text encoder: the caption cache), cached latents, a loader
    # worker, max-norm and gradient clipping
    "loha_cached": (
        "tiny",
        "train_data_dir = '{folders}'\ncaption_extension = \".txt\"\nresolution = \"32\"\nbucket_reso_steps = 32\n"
        "max_train_epochs = 2\nseed = 5\ncache_latents = true\nnetwork_train_unet_only = true\n"
        'network_module = "lycoris.kohya"\nnetwork_args = ["algo=loha", "conv_dim=2"]\n'
        "network_dim = 4\nnetwork_alpha = 4\nlearning_rate = 2e-3\nscale_weight_norms = 0.5\n"
        "max_grad_norm = 0.5\nmax_data_loader_n_workers = 1\n",
    ),
    # LoKr on the tiny SDXL, bf16 autocast
    "lokr_sdxl_bf16": (
        "sdxl",
        "train_data_dir = '{folders}'\ncaption_extension = \".txt\"\nresolution = \"64\"\n"
        'max_train_steps = 3\nseed = 9\nmixed_precision = "bf16"\nnetwork_module = "lycoris.kohya"\n'
        'network_args = ["algo=lokr", "factor=4"]\nnetwork_dim = 4\nnetwork_alpha = 1\n'
        'learning_rate = 1e-3\noptimizer_type = "Lion"\n',
    ),
}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def run_case(name: str, tiny_checkpoints, tmp_path: Path) -> dict[str, torch.Tensor]:
    model, body = CASES[name]
    demo = write_demo(tmp_path / "demo")
    folders = make_folder_dataset(tmp_path, images=3, repeats=2)
    body = body.format(demo=demo.config.as_posix(), folders=folders.as_posix())
    checkpoint = TINY if model == "tiny" else tiny_checkpoints[model]
    out = (tmp_path / "out").as_posix()
    config = write_config(tmp_path / "c.toml", checkpoint, body + COMMON + f"output_dir = '{out}'\n")
    result = train(load_config(config), quiet=True)
    return load_file(result.final_file)


@pytest.mark.parametrize("name", list(CASES))
def test_fixed_seed_runs_give_the_pinned_weights(name, tiny_checkpoints, tmp_path):
    tensors = run_case(name, tiny_checkpoints, tmp_path)
    reference = load_file(REFERENCE / f"{name}.safetensors")
    assert tensors.keys() == reference.keys()
    if torch.backends.cpu.get_cpu_capability() == DIGEST_CPU:
        assert digest(tensors) == digest(reference), {
            k: (tensors[k].float() - reference[k].float()).abs().max().item() for k in tensors
        }
    else:
        for key in tensors:
            torch.testing.assert_close(tensors[key], reference[key], rtol=0, atol=1e-6)


if __name__ == "__main__":  # pragma: no cover - writes the reference files (run on the old code)
    import tempfile

    from lorakit.models.tiny import write_checkpoint

    torch.set_num_threads(1)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoints = {"sdxl": write_checkpoint(Path(tmp) / "sdxl.safetensors", "sdxl")}
            tensors = run_case(case, checkpoints, Path(tmp))
            save_file(tensors, str(REFERENCE / f"{case}.safetensors"))
            print(case, digest(tensors))
