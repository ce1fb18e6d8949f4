"""Absurd values stop `lorakit train` with one clear line before anything heavy happens: never a
traceback, never a silent substitute."""

import pytest
from faultkit import write_config

from lorakit.cli.main import main

# (option, value, what the first line of the message must say)
BAD_VALUES = [
    ("max_train_epochs", "0", "'max_train_epochs' must be at least 1 (found 0)"),
    ("max_train_epochs", "-1", "'max_train_epochs' must be at least 1 (found -1)"),
    ("max_train_steps", "0", "'max_train_steps' must be at least 1"),
    ("network_dim", "0", "'network_dim' must be at least 1 (found 0)"),
    ("network_dim", "-4", "'network_dim' must be at least 1"),
    ("network_alpha", "-1", "'network_alpha' must be at least 0"),
    ("learning_rate", "-1e-4", "'learning_rate' must be more than 0 (found -0.0001)"),
    ("learning_rate", "0", "'learning_rate' must be more than 0"),
    ("unet_lr", "-1", "'unet_lr' must be at least 0"),
    ("text_encoder_lr", "-0.5", "'text_encoder_lr' must be at least 0"),
    ("resolution", "abc", "'resolution' must be a number like 512 or a pair like [512, 768]"),
    ("resolution", "0", "'resolution' must be larger than 0"),
    ("resolution", "500", "'resolution' must be a multiple of 8"),
    ("resolution", "512x-8", "'resolution' must be larger than 0"),
    ("train_batch_size", "0", "batch_size must be 1 or more"),
    ("gradient_accumulation_steps", "0", "'gradient_accumulation_steps' must be at least 1"),
    ("max_grad_norm", "-1", "'max_grad_norm' must be at least 0"),
    ("network_dropout", "1.5", "'network_dropout' must be at least 0 and below 1"),
    ("caption_dropout_rate", "2", "'caption_dropout_rate' must be between 0 and 1"),
    ("validation_split", "1.5", "'validation_split' must be between 0 and 1"),
    ("seed", "-1", "'seed' must be at least 0"),
    ("save_every_n_epochs", "-1", "'save_every_n_epochs' must be at least 0 (found -1)"),
    ("save_every_n_steps", "-5", "'save_every_n_steps' must be at least 0"),
    ("sample_every_n_steps", "-2", "'sample_every_n_steps' must be at least 0"),
    ("lr_warmup_steps", "-5", "'lr_warmup_steps' must be at least 0"),
    ("min_snr_gamma", "0", "'min_snr_gamma' must be more than 0"),
    ("noise_offset", "-0.1", "'noise_offset' must be at least 0"),
    ("max_timestep", "2000", "'max_timestep' must be between 1 and 1000"),
    ("min_timestep", "-1", "'min_timestep' must be between 0 and 999"),
    ("multires_noise_discount", "2", "'multires_noise_discount' must be between 0 and 1"),
    ("huber_c", "0", "'huber_c' must be more than 0"),
    ("vae_batch_size", "0", "'vae_batch_size' must be at least 1"),
    ("clip_skip", "0", "'clip_skip' must be at least 1"),
    ("keep_tokens", "-1", "keep_tokens must be 0 or more"),
    ("bucket_reso_steps", "7", "bucket_reso_steps must be a multiple of 8"),
    (
        "optimizer_type",
        "AdamW9bit",
        "'optimizer_type' is not an optimizer lorakit knows. Did you mean 'adamw8bit'?",
    ),
    ("lr_scheduler", "cosin", "'lr_scheduler' is not a schedule lorakit knows. Did you mean 'cosine'?"),
    ("sample_sampler", "Euler b", "'sample_sampler' is not usable: unknown sampler 'Euler b'"),
    ("mixed_precision", "fp8", "mixed_precision must be no, fp16 or bf16"),
    ("loss_type", "l3", "loss_type must be l2, l1, huber or smooth_l1"),
    ("save_precision", "fp8", "'save_precision' must be one of float, fp16, bf16"),
    ("output_name", "a/b", "'output_name' must be a plain file name"),
    ("network_module", "networks.lorra", "network_module 'networks.lorra' is not supported"),
    ("network_args", "conv_dim", "network_args: 'conv_dim' must be written key=value"),
    ("network_args", "conv_dimm=4", "unknown network_args for networks.lora: conv_dimm"),
    (
        "pretrained_model_name_or_path",
        "missing.safetensors",
        "missing.safetensors: no such model file or folder",
    ),
    ("train_data_dir", "no-such-folder", "no-such-folder"),
    (
        "network_weights",
        "no-such.safetensors",
        "network_weights = 'no-such.safetensors': no such file or folder",
    ),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("values"), epochs=1)


@pytest.mark.parametrize(
    ("option", "value", "expected"), BAD_VALUES, ids=[f"{o}={v}" for o, v, _ in BAD_VALUES]
)
def test_a_bad_value_gets_one_clear_line(config, capsys, monkeypatch, option, value, expected):
    import lorakit.training.setup as setup

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the value was checked")

    monkeypatch.setattr(setup, "load_model", no_model)
    monkeypatch.chdir(config.parent)
    assert main(["train", str(config), f"--{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith("error: ") and expected in first, err


def test_the_table_is_long_enough():
    assert len(BAD_VALUES) >= 30
