"""Training forward vs merged weights, strength and block weights, several networks, exact unmerge,
optimizer groups, options and dropouts."""

import pytest
import torch
from network_helpers import layer_weights, randomize, tiny

from lorakit.errors import LorakitError
from lorakit.networks import NetworkError, applied, create_network, merge_networks, network_deltas
from lorakit.networks.blocks import LBW_IDS


def unet_out(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return model.unet(x, torch.tensor([500]), context).sample


def te_out(model):
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        return model.text_encoders[0](ids).last_hidden_state


@pytest.mark.parametrize(
    "module, args",
    [
        ("networks.lora", ["conv_dim=2"]),
        ("lycoris.kohya", ["algo=locon", "conv_dim=2", "use_tucker=true"]),
        ("lycoris.kohya", ["algo=loha", "conv_dim=2"]),
        ("lycoris.kohya", ["algo=lokr", "factor=4", "conv_dim=2"]),
        ("lycoris.kohya", ["algo=lora", "dora_wd=true"]),
        ("networks.dylora", ["unit=2"]),
    ],
    ids=["locon", "locon-tucker", "loha", "lokr", "dora", "dylora"],
)
def test_hooked_forward_equals_merged_weights(module, args, tmp_path):
    model = tiny("sd1")
    net = create_network(model, module, 4, 2, args, multiplier=0.8)
    randomize(net)
    path = net.save(tmp_path / "n.safetensors")
    net.apply_to().eval()
    hooked_unet, hooked_te = unet_out(model), te_out(model)
    net.remove()
    base = unet_out(model)
    assert not torch.allclose(hooked_unet, base, atol=1e-4)  # the network does something

    merged = tiny("sd1")
    merge_networks(merged, [(path, 0.8)])
    assert torch.allclose(unet_out(merged), hooked_unet, atol=1e-4)
    assert torch.allclose(te_out(merged), hooked_te, atol=1e-4)


def test_dylora_trains_a_random_rank_prefix():
    model = tiny("sd1")
    net = create_network(model, "networks.dylora", 4, 4, ["unit=2"], network_train_unet_only=True)
    randomize(net)
    module = net.get_submodule("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")
    layer = module.org_module
    x = torch.randn(3, 32)
    base = layer(x)
    down, up = module.lora_down.weight, module.lora_up.weight
    expect = {k: base + (x @ down[:k].T @ up[:, :k].T) for k in (2, 4)}
    net.apply_to().train()
    seen = set()
    for _ in range(30):
        y = layer(x)
        matches = [k for k, e in expect.items() if torch.allclose(y, e, atol=1e-5)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {2, 4}
    # a step that trains the second unit leaves the first (frozen) without gradient
    for _ in range(30):
        net.zero_grad()
        y = layer(x)
        y.sum().backward()
        if torch.allclose(y, expect[4], atol=1e-5):
            grad = module.lora_down.weight.grad
            assert torch.count_nonzero(grad[:2]) == 0 and torch.count_nonzero(grad[2:]) > 0
            break
    else:
        pytest.fail("never drew the second unit")


def test_multiplier_and_block_weights(tmp_path):
    model = tiny("sd1")
    net = create_network(model, "networks.lora", 4, 4, ["conv_dim=2"])
    randomize(net)
    path = net.save(tmp_path / "n.safetensors")
    full = network_deltas(model, path)
    half = network_deltas(model, path, multiplier=0.5)
    for name in full:
        assert torch.allclose(half[name], 0.5 * full[name])

    values = [0.1 * (i + 1) for i in range(26)]  # BASE, IN00..IN11, M00, OUT00..OUT11
    weight_of = dict(zip(LBW_IDS[26], values))
    blocked = network_deltas(model, path, 1.0, values)
    checks = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1": "BASE",
        "lora_unet_down_blocks_0_attentions_0_proj_in": "IN01",  # tiny: 1 layer per block
        "lora_unet_down_blocks_0_downsamplers_0_conv": "IN02",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v": "M00",
        "lora_unet_up_blocks_1_attentions_1_proj_out": "OUT03",
    }
    for name, block in checks.items():
        assert torch.allclose(blocked[name], weight_of[block] * full[name]), name

    outall = network_deltas(model, path, 1.0, "OUTALL")
    assert torch.equal(
        outall["lora_te_text_model_encoder_layers_0_mlp_fc1"],
        full["lora_te_text_model_encoder_layers_0_mlp_fc1"],
    )
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" not in outall  # IN blocks at 0
    assert torch.equal(
        outall["lora_unet_up_blocks_1_attentions_1_proj_out"],
        full["lora_unet_up_blocks_1_attentions_1_proj_out"],
    )


def test_block_weight_errors(tmp_path):
    sd1 = tiny("sd1")
    path = create_network(sd1, "networks.lora", 2, 1).save(tmp_path / "n.safetensors")
    with pytest.raises(NetworkError, match="17 or 26"):
        network_deltas(sd1, path, 1.0, [1.0] * 12)
    xl = tiny("sdxl")
    xl_path = create_network(xl, "networks.lora", 2, 1).save(tmp_path / "xl.safetensors")
    with pytest.raises(NetworkError, match="12 or 20 values"):
        network_deltas(xl, xl_path, 1.0, "MIDD")
    assert network_deltas(xl, xl_path, 1.0, "ALL0.5")  # uniform presets work on SDXL
    assert len(network_deltas(xl, xl_path, 1.0, [1.0] * 12)) > 0


def test_several_networks_add_up_and_unmerge_is_exact(tmp_path):
    model = tiny("sd1")
    a = create_network(model, "networks.lora", 4, 2)
    randomize(a, seed=1)
    b = create_network(model, "lycoris.kohya", 4, 2, ["algo=loha"])
    randomize(b, seed=2)
    pa, pb = a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors", precision="fp16")
    da, db = network_deltas(model, pa, 0.6), network_deltas(model, pb, -0.3, "INALL")

    original = layer_weights(model)
    with applied(model, [(pa, 0.6), (pb, -0.3, "INALL")]):
        after = layer_weights(model)
        for name, key in merged_layers(model).items():
            expected = da[name] + db.get(name, torch.zeros_like(da[name]))
            assert torch.allclose(after[key] - original[key], expected, atol=1e-6), name
        assert len(db) < len(da)  # INALL zeroed the OUT blocks of the second network
    restored = layer_weights(model)
    assert all(torch.equal(restored[k], original[k]) for k in original)


def merged_layers(model):
    """sd-scripts name -> layer_weights key for every default-target layer of the tiny model."""
    net = create_network(model, "networks.lora", 1, 1)
    out = {}
    for name, layer in net.layers.items():
        prefix = "unet" if layer.part == "unet" else "te0"
        out[name] = f"{prefix}.{layer.path}.weight"
    return out


def test_merge_failure_leaves_the_model_unchanged(tmp_path):
    model = tiny("sd1")
    good = create_network(model, "networks.lora", 2, 1)
    randomize(good)
    path = good.save(tmp_path / "good.safetensors")
    original = layer_weights(model)
    with pytest.raises(LorakitError, match="no such file"):
        merge_networks(model, [path, tmp_path / "missing.safetensors"])
    assert all(torch.equal(layer_weights(model)[k], v) for k, v in original.items())


def test_param_groups_block_lr_and_loraplus():
    model = tiny("sd1")
    net = create_network(
        model,
        "networks.lora",
        4,
        1,
        ["down_lr_weight=1,0,1,0.5", "mid_lr_weight=2", "up_lr_weight=zeros+0.25", "loraplus_lr_ratio=16"],
    )
    # the first value is block 0 (conv_in, never targeted); block 1 at 0 is not created at all
    assert not any(layer.block == 1 for layer in net.layers.values())
    groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=1e-5)
    by_name = {g["name"]: g for g in groups}
    assert by_name["unet_block12"]["lr"] == pytest.approx(2e-4)  # mid
    assert by_name["unet_block12_plus"]["lr"] == pytest.approx(2e-4 * 16)
    assert by_name["unet_block16"]["lr"] == pytest.approx(0.25e-4)  # an up block
    assert by_name["textencoder"]["lr"] == pytest.approx(1e-5)
    assert by_name["textencoder_plus"]["lr"] == pytest.approx(1.6e-4)
    plus_ids = {id(p) for g in groups if g["name"].endswith("_plus") for p in g["params"]}
    for _, module in net.named_network_modules():
        assert id(module.lora_up.weight) in plus_ids and id(module.lora_down.weight) not in plus_ids
    counted = sum(len(g["params"]) for g in groups)
    assert counted == len(list(net.parameters()))


def test_train_parts_and_sdxl_two_text_encoder_lrs():
    xl = tiny("sdxl")
    net = create_network(xl, "networks.lora", 2, 1)
    groups = {g["name"]: g["lr"] for g in net.param_groups(1e-4, [1e-5, 2e-5])}
    assert groups == {"unet": 1e-4, "textencoder": 1e-5, "textencoder2": 2e-5}
    assert set(create_network(xl, "networks.lora", 2, 1, network_train_unet_only=True).counts()) == {"unet"}
    only_te = create_network(xl, "networks.lora", 2, 1, network_train_text_encoder_only=True).counts()
    assert set(only_te) == {"text_encoder", "text_encoder_2"}


def test_block_dims_set_ranks_per_block():
    model = tiny("sd1")
    dims = ",".join(str(i % 4 + 1) for i in range(25))
    net = create_network(model, "networks.lora", 4, 1, [f"block_dims={dims}"], network_train_unet_only=True)
    for name, layer in net.layers.items():
        assert net.get_submodule(name).dim == layer.block % 4 + 1


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("networks.lora", ["algo=loha"], "need network_module lycoris.kohya"),
        ("networks.lora", ["conv_dims=4"], "unknown network_args.*conv_dims"),
        ("networks.lora", ["block_dims=1,2,3"], "block_dims has 3 values; SD 1.x needs 25"),
        ("lycoris.kohya", ["algo=ia3"], "not supported"),
        ("lycoris.kohya", ["algo=loha", "dropout=0.1"], "rank_dropout or module_dropout"),
        ("networks.lora", ["down_lr_weight=wavy"], "preset"),
        ("networks.oft", [], "network_module 'networks.oft' is not supported"),
        ("networks.dylora", ["unit=3"], "must divide network_dim"),
    ],
)
def test_option_errors_name_the_fix(module, args, message):
    with pytest.raises(NetworkError, match=message):
        create_network(tiny("sd1"), module, 4, 1, args)


def test_module_dropout_and_rank_dropout_only_act_in_training():
    model = tiny("sd1")
    net = create_network(
        model, "networks.lora", 4, 1, ["module_dropout=0.9999"], network_train_unet_only=True
    )
    randomize(net)
    base = unet_out(model)
    net.apply_to().train()
    assert torch.allclose(unet_out(model), base)  # every module dropped
    net.eval()
    assert not torch.allclose(unet_out(model), base, atol=1e-4)
    net.remove()

    net = create_network(model, "networks.lora", 4, 1, ["rank_dropout=0.5"], network_train_unet_only=True)
    randomize(net)
    net.apply_to().eval()
    deterministic = unet_out(model)
    assert torch.allclose(unet_out(model), deterministic)
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(unet_out(model), deterministic, atol=1e-5)
    net.remove()
