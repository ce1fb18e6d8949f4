"""LoRAs merged into a checkpoint: the streamed file loads with `load_model` and equals the base
plus the deltas computed by hand from the LoRA files, for every algorithm, on every family."""

import json

import pytest
import torch
from network_helpers import dora_hand, modules_of, read_file
from safetensors import safe_open
from tools_helpers import file_deltas, layer_shapes, layer_weights, make_lora

from lorakit.models.ldm.clip import canonical
from lorakit.models.load import load_model
from lorakit.networks import NetworkError
from lorakit.networks.naming import LayerIndex
from lorakit.tools import LoraSpec, merge_into_checkpoint, parse_lora_spec


@pytest.fixture(scope="module")
def bases(tiny_checkpoints):
    return {family: load_model(path) for family, path in tiny_checkpoints.items()}


def expected_delta(path, base_weights, shapes):
    """Hand delta of each module (DoRA: m·(W+ΔW)/‖W+ΔW‖ − W against the base weight)."""
    raw = modules_of(read_file(path)[0])
    out = {}
    for name, delta in file_deltas(path, shapes).items():
        if "dora_scale" in raw[name]:
            delta = dora_hand(base_weights[name], delta, raw[name]["dora_scale"])
        out[name] = delta
    return out


def assert_merged(merged_model, base_model, expected: dict[str, torch.Tensor], atol=1e-5):
    """Every hooked layer equals base + expected (base where nothing was merged); every other
    tensor of every component (VAE, norms, biases, embeddings) is untouched, bit for bit."""
    base_w, merged_w = layer_weights(base_model), layer_weights(merged_model)
    for name, weight in base_w.items():
        want = weight + expected[name] if name in expected else weight
        assert torch.allclose(merged_w[name], want, atol=atol), name
    hooked = {
        (layer.part, layer.path + ".weight") for layer in LayerIndex.for_model(base_model).layers.values()
    }
    for part, module in merged_model.components.items():
        base_state = base_model.components[part].state_dict()
        for key, value in module.state_dict().items():
            if (part, canonical(key)) not in hooked:
                assert torch.equal(value, base_state[key]), f"{part}.{key}"


@pytest.mark.parametrize("algo", ["lora", "locon", "loha", "lokr", "dora"])
def test_merge_equals_base_plus_hand_delta_for_each_algorithm(algo, bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / f"{algo}.safetensors", algo)
    report = merge_into_checkpoint(tiny_checkpoints["sd1"], [(lora, 0.7)], tmp_path / "merged.safetensors")
    assert report.streamed and report.output.exists()
    merged = load_model(report.output)
    expected = expected_delta(lora, layer_weights(base), layer_shapes(base))
    assert_merged(merged, base, {name: 0.7 * d for name, d in expected.items()})
    # SD1 keeps one file tensor per layer: exactly the LoRA's modules changed, nothing else
    with safe_open(str(tiny_checkpoints["sd1"]), "pt") as a, safe_open(str(report.output), "pt") as b:
        assert list(a.keys()) == list(b.keys())
        changed = [k for k in a.keys() if not torch.equal(a.get_tensor(k), b.get_tensor(k))]
    assert len(changed) == len(expected) == report.tensors_changed


def test_sdxl_two_loras_block_weights_and_fused_qkv(bases, tiny_checkpoints, tmp_path):
    base = bases["sdxl"]
    a = make_lora(base, tmp_path / "a.safetensors", "lora", seed=1)
    b = make_lora(base, tmp_path / "b.safetensors", "loha", seed=2)
    # LBW 20-value layout: BASE, IN00-IN08, M00, OUT00-OUT08
    blocks = [0.5] + [0.0] * 9 + [2.0] + [1.0] * 9
    report = merge_into_checkpoint(
        tiny_checkpoints["sdxl"], [LoraSpec(a, 0.8), LoraSpec(b, -0.5, blocks)], tmp_path / "m.safetensors"
    )

    def block_weight(name):
        if name.startswith("lora_te"):
            return 0.5
        return {"input": 0.0, "middle": 2.0, "output": 1.0}[name.split("_")[2]]

    shapes = layer_shapes(base)
    da, db = file_deltas(a, shapes), file_deltas(b, shapes)
    expected = {name: 0.8 * d for name, d in da.items()}
    for name, d in db.items():
        expected[name] = expected.get(name, 0) + (-0.5) * block_weight(name) * d
    assert any(n.startswith("lora_te2_") and "q_proj" in n for n in expected)  # OpenCLIP fused in_proj
    assert_merged(load_model(report.output), base, expected)
    zeroed = sum(1 for n in db if block_weight(n) == 0)
    assert report.loras[1][2] == zeroed > 0


def test_sd2_merge_keeps_v_prediction_and_text_encoder(bases, tiny_checkpoints, tmp_path):
    base = bases["sd2"]
    lora = make_lora(base, tmp_path / "l.safetensors", "lora")
    report = merge_into_checkpoint(tiny_checkpoints["sd2"], [str(lora) + ":1.5"], tmp_path / "m.safetensors")
    merged = load_model(report.output)
    assert merged.prediction_type == "v_prediction"
    expected = {n: 1.5 * d for n, d in file_deltas(lora, layer_shapes(base)).items()}
    assert any(n.startswith("lora_te_") for n in expected)
    assert_merged(merged, base, expected)
    # the unused last OpenCLIP layer of SD2 is carried through untouched
    with safe_open(str(report.output), "pt") as f:
        assert any(k.startswith("cond_stage_model.model.transformer.resblocks.2.") for k in f.keys())


def test_precision_metadata_and_recipe(bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / "style.safetensors", "lora")
    out = merge_into_checkpoint(
        tiny_checkpoints["sd1"], [f"{lora}:0.5:OUTALL"], tmp_path / "m.safetensors", precision="fp16"
    ).output
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {
            torch.float16
        }
    assert meta["modelspec.merged_from"] == f"{tiny_checkpoints['sd1'].stem}, style:0.5:OUTALL"
    recipe = json.loads(meta["lorakit_merge_recipe"])
    assert recipe["loras"][0]["weight"] == 0.5 and recipe["loras"][0]["blocks"] == "OUTALL"
    assert recipe["loras"][0]["sshs_model_hash"] == read_file(lora)[1]["sshs_model_hash"]
    assert meta["modelspec.title"] == "m" and meta["modelspec.architecture"] == "stable-diffusion-v1"
    merged = load_model(out)
    assert merged.unet.dtype == torch.float16


def test_diffusers_output_matches_streamed_single_file(bases, tiny_checkpoints, tmp_path):
    base = bases["sd1"]
    lora = make_lora(base, tmp_path / "l.safetensors", "lokr")
    streamed = merge_into_checkpoint(tiny_checkpoints["sd1"], [(lora, 0.6)], tmp_path / "m.safetensors")
    folder = merge_into_checkpoint(
        tiny_checkpoints["sd1"], [(lora, 0.6)], tmp_path / "m-diffusers", to="diffusers"
    )
    assert not folder.streamed
    a, b = layer_weights(load_model(streamed.output)), layer_weights(load_model(folder.output))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    recipe = json.loads((folder.output / "lorakit_merge.json").read_text())
    assert recipe["loras"][0]["weight"] == 0.6


def test_lora_for_another_family_is_refused_with_the_reason(bases, tiny_checkpoints, tmp_path):
    xl = make_lora(bases["sdxl"], tmp_path / "xl.safetensors", "lora")
    out = tmp_path / "m.safetensors"
    with pytest.raises(NetworkError, match="trained for SDXL; the model is SD 1.x"):
        merge_into_checkpoint(tiny_checkpoints["sd1"], [xl], out)
    assert not out.exists() and not list(tmp_path.glob(".m.safetensors*"))


def test_lora_spec_parsing():
    assert parse_lora_spec("a.safetensors") == LoraSpec("a.safetensors", 1.0, None)
    assert parse_lora_spec("a.safetensors:0.8") == LoraSpec("a.safetensors", 0.8, None)
    assert parse_lora_spec("a.safetensors:-0.5:OUTALL") == LoraSpec("a.safetensors", -0.5, "OUTALL")
    assert parse_lora_spec("dir/a.safetensors:1:1,0,0.5") == LoraSpec("dir/a.safetensors", 1.0, "1,0,0.5")
    assert parse_lora_spec(r"C:\loras\a.safetensors:0.3") == LoraSpec(r"C:\loras\a.safetensors", 0.3, None)
    assert parse_lora_spec(r"C:\loras\a.safetensors") == LoraSpec(r"C:\loras\a.safetensors", 1.0, None)
