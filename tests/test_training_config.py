"""Training configs: lorakit and sd-scripts TOML, overrides, typos."""

import pytest

from lorakit.errors import ConfigError
from lorakit.training.config import load_config, network_args, optimizer_args, to_toml

SD_SCRIPTS_CONFIG = """
[model_arguments]
pretrained_model_name_or_path = "/models/v1-5-pruned.safetensors"
v2 = false

[additional_network_arguments]
network_module = "lycoris.kohya"
network_dim = 32
network_alpha = 16
network_args = ["conv_dim=4", "conv_alpha=1", "algo=loha"]
unet_lr = 1e-4
text_encoder_lr = 1e-5

[optimizer_arguments]
optimizer_type = "AdamW8bit"
lr_scheduler = "cosine_with_restarts"
lr_warmup_steps = 0.05
optimizer_args = ["weight_decay=0.01", "betas=0.9,0.99"]

[dataset_arguments]
train_data_dir = "./train"
resolution = "512,768"
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1

[training_arguments]
max_train_epochs = 10
train_batch_size = 2
mixed_precision = "bf16"
xformers = true
clip_skip = 2

[saving_arguments]
output_dir = "./output"
output_name = "my_lora"
save_every_n_epochs = 2
"""


def test_sd_scripts_config_with_any_sections(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(SD_SCRIPTS_CONFIG)
    config = load_config(path)
    assert config.network_dim == 32 and config.network_alpha == 16.0
    assert network_args(config) == {"conv_dim": "4", "conv_alpha": "1", "algo": "loha"}
    assert optimizer_args(config) == {"weight_decay": 0.01, "betas": (0.9, 0.99)}
    assert config.lr_warmup_steps == 0.05  # a fraction of all steps
    assert config.resolution == "512,768" and config.clip_skip == 2
    assert "xformers" in config.ignored and "SDPA" in config.ignored["xformers"]
    assert config.origin["network_dim"] == f"{path} [additional_network_arguments]"
    assert config.origin["seed"] == "default"


def test_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(SD_SCRIPTS_CONFIG)
    config = load_config(path, {"network_dim": "8", "flip_aug": True, "lr_warmup_steps": "100"})
    assert config.network_dim == 8 and config.flip_aug is True and config.lr_warmup_steps == 100
    assert config.origin["network_dim"] == "command line"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[training]\nmax_train_epoch = 3\n",
            "unknown option 'max_train_epoch'. Did you mean 'max_train_epochs'?",
        ),
        ("num_repeat = 3\n", "unknown option 'num_repeat'"),
        ("[training]\ntrain_batch_size = 'two'\n", "'train_batch_size' must be a whole number, got 'two'"),
        ("[training]\nmixed_precision = 'fp8'\n", "mixed_precision must be no, fp16 or bf16"),
        ("network_args = ['conv_dim']\n", "'conv_dim' must be written key=value"),
        ("network_dim = \n", "is not valid TOML"),
    ],
)
def test_mistakes_are_named_with_the_fix(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        config = load_config(path)
        network_args(config)


def test_inline_dataset_tables_are_kept_for_the_dataset_reader(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'pretrained_model_name_or_path = "m.safetensors"\n'
        "[general]\nshuffle_caption = true\n"
        "[[datasets]]\nresolution = 512\n[[datasets.subsets]]\nimage_dir = 'img'\nnum_repeats = 10\n"
    )
    config = load_config(path)
    assert config.dataset["general"] == {"shuffle_caption": True}
    assert config.dataset["datasets"][0]["subsets"][0]["num_repeats"] == 10


def test_printed_config_reads_back_the_same(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(SD_SCRIPTS_CONFIG)
    config = load_config(path)
    again_path = tmp_path / "again.toml"
    again_path.write_text(to_toml(config))
    again = load_config(again_path)
    assert again.values == config.values
    assert "[network]\n" in to_toml(config) and "network_dim = 32" in to_toml(config, only_changed=True)


def test_options_lorakit_does_not_act_on_are_reported(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('masked_loss = true\nlog_with = "wandb"\ncache_text_encoder_outputs_to_disk = true\n')
    config = load_config(path)
    assert "alpha_mask" in config.ignored["masked_loss"]
    assert config.log_with == "tensorboard" and "only TensorBoard" in config.ignored["log_with"]
    # acted on since the caption cache writes sd-scripts' _te_outputs.npz files (test_training_caches.py)
    assert "cache_text_encoder_outputs_to_disk" not in config.ignored
    path.write_text('log_with = "comet"\n')
    with pytest.raises(ConfigError, match="log_with must be tensorboard or none"):
        load_config(path)
