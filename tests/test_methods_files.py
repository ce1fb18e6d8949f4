"""The files of the other training methods, read back by other readers (issue 21): embeddings by
a reader written here from A1111's layout and by diffusers' `load_textual_inversion`, the
DreamBooth checkpoint by `lorakit inspect` and diffusers' `from_single_file`, the hypernetwork
by its key list built by hand from the layer structure, and its math against a computation
done here."""

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from training_helpers import make_folder_dataset, write_config

from lorakit.cli.main import main
from lorakit.evaluation.pngmeta import read_parameters
from lorakit.models.embedding_files import read_embedding
from lorakit.models.load import load_model
from lorakit.models.prompt_conditioning import encode_prompt
from lorakit.models.save import save_diffusers
from lorakit.networks import load_network
from lorakit.networks.hypernetwork import attention_widths, read_hypernetwork
from lorakit.training.config import load_config
from lorakit.training.recipe import train

WIDTH = 32  # the tiny models' text width (both encoders on the tiny SDXL)


def run(tmp_path: Path, checkpoint: Path, body: str, name: str | None = "x", steps: int = 2):
    """A few steps of training on two pictures captioned 'sks, magenta circle N, white background'."""
    data = make_folder_dataset(tmp_path / "data", images=2, repeats=1)
    common = (
        f'train_data_dir = "{data.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        f'max_train_steps = {steps}\nseed = 1\nlog_with = "none"\noutput_dir = "{(tmp_path / "out").as_posix()}"\n'
    )
    if name is not None:
        common += f'output_name = "{name}"\n'
    return train(load_config(write_config(tmp_path / "c.toml", checkpoint, common + body)), quiet=True)


def a1111_embedding(data: dict) -> tuple[str, list[torch.Tensor]]:
    """What A1111's create_embedding_from_data reads, written from its description: the layout and
    the vectors per encoder."""
    if "string_to_param" in data:
        assert len(data["string_to_param"]) == 1
        return "textual inversion", [next(iter(data["string_to_param"].values()))]
    if "clip_g" in data and "clip_l" in data:
        return "sdxl", [data["clip_l"], data["clip_g"]]
    assert len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor)
    return "single tensor", [next(iter(data.values()))]


def generate_args(checkpoint: Path, *more: str) -> list[str]:
    """`lorakit generate` on the tiny model, two steps, one seed: pictures that differ only by the add-on."""
    return ["generate", "--model", str(checkpoint), "--steps", "2", "--seed", "3", *more]


# -- textual inversion ---------------------------------------------------------------------------


TI = 'training_type = "textual_inversion"\ntoken_string = "sks"\nnum_vectors_per_token = 3\ninit_word = "circle"\nlearning_rate = 1e-2\n'


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_textual_inversion_file_is_what_a1111_and_diffusers_read(tiny_checkpoints, tmp_path, family):
    result = run(tmp_path, tiny_checkpoints[family], TI, name=None)
    assert result.final_file.name == "sks.safetensors"  # named after the word: A1111 finds it by name
    with safe_open(str(result.final_file), "pt") as f:
        keys = set(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
        assert f.metadata()["modelspec.architecture"].endswith("/textual-inversion")
    layout, vectors = a1111_embedding(tensors)
    if family == "sdxl":
        assert keys == {"clip_l", "clip_g"} and layout == "sdxl"
    else:
        assert keys == {"emb_params"} and layout == "single tensor"
    assert all(v.shape == (3, WIDTH) and v.dtype == torch.float32 for v in vectors)
    weights = [p for files in (result.output_dir.glob("*.safetensors"),) for p in files]
    assert weights == [result.final_file]  # the embedding is the only model file the run writes

    # it trained from 'circle' (its one token copied into the 3 vectors) and only it changed
    base = load_model(tiny_checkpoints[family])
    circle = base.tokenizers[0]("circle", add_special_tokens=False).input_ids
    assert len(circle) == 1
    for encoder, v in zip(base.text_encoders, vectors):
        start = encoder.get_input_embeddings().weight[circle[0]]
        assert 0 < (v - start).abs().max() < 1  # moved, from where it started
    for encoder, trained in zip(base.text_encoders, result.model.text_encoders):
        table, after = encoder.get_input_embeddings().weight, trained.get_input_embeddings().weight
        assert torch.equal(table, after[: table.shape[0]])  # the vocabulary's rows never change

    # diffusers: one call per text encoder (SDXL's clip_l / clip_g pair), vectors in the new rows
    pipe = base.pipeline()
    pairs = [(pipe.tokenizer, pipe.text_encoder)] + (
        [(pipe.tokenizer_2, pipe.text_encoder_2)] if family == "sdxl" else []
    )
    for (tokenizer, encoder), key, v in zip(pairs, ["clip_l", "clip_g"], vectors):
        source = str(result.final_file) if family != "sdxl" else tensors[key]
        pipe.load_textual_inversion(source, token="sks", tokenizer=tokenizer, text_encoder=encoder)
        ids = tokenizer.convert_tokens_to_ids(["sks", "sks_1", "sks_2"])
        torch.testing.assert_close(encoder.get_input_embeddings().weight[ids], v, rtol=0, atol=0)


def test_the_a1111_pt_layout_and_what_the_prompt_encodes(tiny_checkpoints, tmp_path):
    result = run(tmp_path, tiny_checkpoints["sd1"], TI + 'save_model_as = "pt"\n', name=None)
    assert result.final_file.name == "sks.pt"
    data = torch.load(result.final_file, weights_only=True)  # plain data: no code, no classes
    assert set(data) == {
        "string_to_token",
        "string_to_param",
        "name",
        "step",
        "sd_checkpoint",
        "sd_checkpoint_name",
    }
    assert data["string_to_token"] == {"*": 265} and data["name"] == "sks" and data["step"] == 2
    assert len(data["sd_checkpoint"]) == 10 and data["sd_checkpoint_name"] == "tiny-sd1"
    assert a1111_embedding(data)[1][0].shape == (3, WIDTH)
    assert torch.equal(read_embedding(result.final_file).vectors[0], data["string_to_param"]["*"])

    # A1111 reads the word in any case; the conditioning is what diffusers encodes with the file loaded
    model = load_model(tiny_checkpoints["sd1"])
    model.embeddings.add(model, read_embedding(result.final_file))
    pipe = load_model(tiny_checkpoints["sd1"]).pipeline()
    pipe.load_textual_inversion(str(result.final_file), token="sks")
    theirs, _ = pipe.encode_prompt("a photo of sks, circle", "cpu", 1, False)
    ours = encode_prompt(model, "a photo of SKS, circle", style="plain").hidden
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    plain = encode_prompt(load_model(tiny_checkpoints["sd1"]), "a photo of sks, circle", style="plain").hidden
    assert (ours - plain).abs().max() > 1e-3
    model.embeddings.deactivate("sks")  # a word no longer in use reads as before
    torch.testing.assert_close(encode_prompt(model, "a photo of sks, circle", style="plain").hidden, plain)


def test_generate_uses_an_embeddings_folder_by_file_name(tiny_checkpoints, tmp_path, capsys):
    result = run(tmp_path, tiny_checkpoints["sd1"], TI, name=None)
    out = tmp_path / "images"
    args = generate_args(tiny_checkpoints["sd1"], "--device", "cpu")
    assert (
        main([*args, "--prompt", "sks, circle", "--embeddings", str(result.output_dir), "--out", str(out)])
        == 0
    )
    assert main([*args, "--prompt", "sks, circle", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "embeddings: sks" in printed
    first, second = sorted(out.glob("*.png"))
    assert first.read_bytes() != second.read_bytes()


# -- pivotal tuning --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_pivotal_tuning_bundles_the_words_in_the_lora_file(tiny_checkpoints, tmp_path, family):
    body = (
        'train_embeddings = ["sks"]\nnum_vectors_per_token = 2\nexport_embeddings = true\nnetwork_dim = 2\n'
        "learning_rate = 1e-3\nsave_every_n_steps = 1\nsave_last_n_steps = 1\n"
    )
    result = run(tmp_path, tiny_checkpoints[family], body, steps=3)
    tensors = load_file(result.final_file)
    bundled = {k: v for k, v in tensors.items() if k.startswith("bundle_emb.")}
    names = (
        ["bundle_emb.sks.clip_l", "bundle_emb.sks.clip_g"]
        if family == "sdxl"
        else ["bundle_emb.sks.string_to_param.*"]
    )
    assert sorted(bundled) == sorted(names)
    assert all(v.shape == (2, WIDTH) for v in bundled.values())
    assert any(k.startswith("lora_unet_") for k in tensors)
    # lorakit's reader takes the LoRA and its words apart; the exported file holds the same vectors
    net = load_network(result.final_file)
    assert [e.name for e in net.embeddings] == ["sks"] and "bundle_emb" not in "".join(net.modules)
    exported = result.output_dir / "x-embeddings" / "sks.safetensors"
    assert (
        exported.exists() and (result.output_dir / "x-step00000002-embeddings" / "sks.safetensors").exists()
    )
    assert not (result.output_dir / "x-step00000001-embeddings").exists()  # pruned with its step file
    for mine, theirs in zip(read_embedding(exported).vectors, net.embeddings[0].vectors):
        assert torch.equal(mine, theirs)
    record = json.loads(result.record.read_text())
    assert str(result.output_dir / "x-embeddings") in record["files"]


# -- DreamBooth ------------------------------------------------------------------------------------


def test_a_dreambooth_checkpoint_is_a_single_file_diffusers_and_inspect_read(
    tiny_checkpoints, tmp_path, capsys
):
    result = run(
        tmp_path,
        tiny_checkpoints["sd1"],
        'training_type = "dreambooth"\nlearning_rate = 1e-4\nmetadata_author = "me"\n',
    )
    file = result.final_file
    assert file.name == "x.safetensors"
    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
        assert {f.get_slice(k).get_dtype() for k in f.keys() if "position_ids" not in k} == {
            "F16"
        }  # fp16 by default
    assert meta["ss_steps"] == "2" and meta["modelspec.author"] == "me" and meta["modelspec.title"] == "x"
    assert main(["inspect", str(file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "checkpoint" and report["family"] == "SD 1.x" and report["precision"] == "fp16"

    from diffusers import StableDiffusionPipeline

    config = save_diffusers(load_model(tiny_checkpoints["sd1"]), tmp_path / "config")
    pipe = StableDiffusionPipeline.from_single_file(str(file), config=str(config), local_files_only=True)
    base, trained = load_model(tiny_checkpoints["sd1"]), result.model
    theirs = pipe.unet.state_dict()
    moved = 0
    for key, value in trained.unet.state_dict().items():
        assert torch.equal(theirs[key].half(), value.half()), key
        moved += not torch.equal(base.unet.state_dict()[key].half(), value.half())
    assert moved > 100  # the whole U-Net trained, not an add-on
    text = pipe.text_encoder.state_dict()
    for key, value in trained.text_encoders[0].state_dict().items():
        if value.is_floating_point():
            assert torch.equal(text[key].half(), value.half()), key


def test_dreambooth_in_the_diffusers_layout(tiny_checkpoints, tmp_path):
    body = 'training_type = "dreambooth"\nsave_model_as = "diffusers"\ntrain_text_encoder = false\nsave_precision = "bf16"\n'
    result = run(tmp_path, tiny_checkpoints["sd1"], body)
    assert result.final_file == tmp_path / "out" / "x" and (result.final_file / "model_index.json").exists()
    assert result.model.unet.dtype == torch.float32  # the model trained in fp32 was not cast by the save

    with safe_open(str(result.final_file / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(result.final_file), local_files_only=True)
    base = load_model(tiny_checkpoints["sd1"])  # the text encoder did not train
    pairs = zip(pipe.text_encoder.parameters(), base.text_encoders[0].parameters())
    assert all(torch.equal(a.float(), b.to(torch.bfloat16).float()) for a, b in pairs)


# -- hypernetworks -------------------------------------------------------------------------------


def test_a_hypernetwork_file_has_a1111s_keys_and_layers(tiny_checkpoints, tmp_path):
    body = (
        'training_type = "hypernetwork"\nhypernetwork_layer_structure = [1, 2, 1]\n'
        'hypernetwork_activation_func = "relu"\nhypernetwork_layer_norm = true\n'
        "hypernetwork_dropout_structure = [0, 0.3, 0]\nlearning_rate = 1e-3\n"
    )
    result = run(tmp_path, tiny_checkpoints["sd1"], body)
    assert result.final_file.name == "x.pt"
    data = torch.load(result.final_file, weights_only=True)
    widths = attention_widths(load_model(tiny_checkpoints["sd1"]))
    assert sorted(k for k in data if isinstance(k, int)) == widths
    # [1, 2, 1] with relu, layer norm and dropout 0.3 after the hidden layer, A1111's Sequential:
    # 0 Linear, 1 ReLU, 2 LayerNorm, 3 Dropout, 4 Linear (no activation: activate_output off), 5 LayerNorm
    expected = {
        "linear.0.weight": lambda w: (2 * w, w), "linear.0.bias": lambda w: (2 * w,),
        "linear.2.weight": lambda w: (2 * w,), "linear.2.bias": lambda w: (2 * w,),
        "linear.4.weight": lambda w: (w, 2 * w), "linear.4.bias": lambda w: (w,),
        "linear.5.weight": lambda w: (w,), "linear.5.bias": lambda w: (w,),
    }  # fmt: skip
    for width in widths:
        k, v = data[width]
        for state in (k, v):
            assert list(state) == list(expected)
            assert all(tuple(state[key].shape) == shape(width) for key, shape in expected.items())
    assert data["layer_structure"] == [1.0, 2.0, 1.0] and data["activation_func"] == "relu"
    assert data["is_layer_norm"] is True and data["use_dropout"] is True
    assert data["dropout_structure"] == [0.0, 0.3, 0.0] and data["last_layer_dropout"] is True
    assert data["activate_output"] is False and data["weight_initialization"] == "Normal"
    assert data["step"] == 2 and data["name"] == "x" and len(data["sd_checkpoint"]) == 10


def test_a_hypernetwork_changes_the_key_and_value_inputs_as_a1111(tiny_checkpoints, tmp_path):
    result = run(tmp_path, tiny_checkpoints["sd1"], 'training_type = "hypernetwork"\nlearning_rate = 1e-2\n')
    net = read_hypernetwork(result.final_file)
    model = load_model(tiny_checkpoints["sd1"])
    attention = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    context = torch.randn(1, 5, attention.to_k.in_features)
    k_module, v_module = net.layers[str(attention.to_k.in_features)]
    net.set_multiplier(0.5).apply_to(model)
    with torch.no_grad():
        k, v = attention.to_k(context), attention.to_v(context)
        # x + mlp(x) * multiplier, written out from the saved weights: Linear, Linear (linear activation)
        state = torch.load(result.final_file, weights_only=True)[attention.to_k.in_features]

        def mlp(s, x):
            return (
                x
                + (x @ s["linear.0.weight"].T + s["linear.0.bias"]) @ s["linear.1.weight"].T * 0.5
                + s["linear.1.bias"] * 0.5
            )

        net.remove()
        torch.testing.assert_close(k, attention.to_k(mlp(state[0], context)))
        torch.testing.assert_close(v, attention.to_v(mlp(state[1], context)))
    assert k_module is not v_module and net.step == 2


def test_generate_applies_a_hypernetwork_with_its_strength(tiny_checkpoints, tmp_path, capsys):
    result = run(tmp_path, tiny_checkpoints["sd1"], 'training_type = "hypernetwork"\nlearning_rate = 1e-2\n')
    args = generate_args(tiny_checkpoints["sd1"], "--prompt", "sks")
    for strength in ("0", "1"):
        out = tmp_path / strength
        assert main([*args, "--hypernetwork", f"{result.final_file}:{strength}", "--out", str(out)]) == 0
    assert "hypernetworks: x x 1" in capsys.readouterr().out
    plain = tmp_path / "plain"
    assert main([*args, "--out", str(plain)]) == 0
    zero, one, none = (next(p.glob("*.png")) for p in (tmp_path / "0", tmp_path / "1", plain))
    assert (
        read_parameters(one).extra["Hypernet"] == "x"
        and read_parameters(one).extra["Hypernet strength"] == "1"
    )
    assert zero.read_bytes() != one.read_bytes()
    assert (
        torch.tensor(list(Image.open(zero).getdata())) == torch.tensor(list(Image.open(none).getdata()))
    ).all()


# -- the README's examples -------------------------------------------------------------------------


def test_the_readme_examples_of_each_method_are_configs_lorakit_reads(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "training_type" in b]
    kinds = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.toml"
        path.write_text(block, encoding="utf-8")
        config = load_config(path)  # every name known, every value valid
        kinds.append(config.training_type)
    assert kinds == ["dreambooth", "textual_inversion", "lora", "hypernetwork"]
