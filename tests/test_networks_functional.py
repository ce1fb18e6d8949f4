"""The delta math, checked against what the factors do to an input (layer composition), against
LyCORIS' own functional code, and against the LyCORIS factorization table."""

import pytest
import torch
import torch.nn.functional as F

from lorakit.networks import functional as fn

torch.manual_seed(0)


def test_lora_linear_delta_is_down_then_up():
    down, up = torch.randn(4, 12), torch.randn(10, 4)
    x = torch.randn(3, 12)
    assert torch.allclose(F.linear(x, fn.lora_delta(up, down)), F.linear(F.linear(x, down), up), atol=1e-5)


def test_locon_3x3_delta_equals_conv_then_1x1_conv():
    down, up = torch.randn(4, 6, 3, 3), torch.randn(8, 4, 1, 1)
    x = torch.randn(2, 6, 9, 9)
    composed = F.conv2d(F.conv2d(x, down, padding=1, stride=2), up)
    merged = F.conv2d(x, fn.lora_delta(up, down), padding=1, stride=2)
    assert fn.lora_delta(up, down).shape == (8, 6, 3, 3)
    assert torch.allclose(composed, merged, atol=1e-4)


def test_locon_tucker_delta_equals_down_mid_up_convs():
    down, mid, up = torch.randn(4, 6, 1, 1), torch.randn(4, 4, 3, 3), torch.randn(8, 4, 1, 1)
    x = torch.randn(2, 6, 7, 7)
    composed = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    assert torch.allclose(composed, F.conv2d(x, fn.lora_delta(up, down, mid), padding=1), atol=1e-4)


def test_2d_factors_reshape_to_a_1x1_conv():
    """ComfyUI accepts 2-D factors for a 1x1 conv; lorakit reads them the same way."""
    down, up = torch.randn(4, 6), torch.randn(8, 4)
    assert fn.lora_delta(up, down, shape=(8, 6, 1, 1)).shape == (8, 6, 1, 1)


def test_loha_is_elementwise_product_of_two_low_rank_matrices():
    w1a, w1b, w2a, w2b = torch.randn(10, 3), torch.randn(3, 12), torch.randn(10, 3), torch.randn(3, 12)
    d = fn.loha_delta(w1a, w1b, w2a, w2b)
    i, j = 7, 5
    assert torch.isclose(d[i, j], (w1a[i] * w1b[:, j]).sum() * (w2a[i] * w2b[:, j]).sum(), atol=1e-5)
    # rank can exceed r: the point of LoHa
    assert torch.linalg.matrix_rank(d) > 3


def test_loha_tucker_matches_lycoris_reference():
    loha = pytest.importorskip("lycoris.functional.loha")
    r, out_dim, in_dim = 3, 8, 6
    t1, t2 = torch.randn(r, r, 3, 3), torch.randn(r, r, 3, 3)
    w1a, w1b, w2a, w2b = (
        torch.randn(r, out_dim),
        torch.randn(r, in_dim),
        torch.randn(r, out_dim),
        torch.randn(r, in_dim),
    )
    ours = fn.loha_delta(w1a, w1b, w2a, w2b, t1, t2)
    ref = loha.diff_weight(w1b, w1a, w2b, w2a, t1, t2, gamma=1.0, backend="torch")
    assert torch.allclose(ours, ref, atol=1e-4)


def test_lokr_is_kronecker_product():
    w1, w2a, w2b = torch.randn(2, 3), torch.randn(5, 2), torch.randn(2, 4)
    d = fn.lokr_delta(w1=w1, w2a=w2a, w2b=w2b)
    w2 = w2a @ w2b
    assert d.shape == (10, 12)
    # element (i*5 + j, p*4 + q) = w1[i, p] * w2[j, q]
    assert torch.isclose(d[1 * 5 + 3, 2 * 4 + 1], w1[1, 2] * w2[3, 1])


def test_lokr_conv_matches_lycoris_reference():
    lokr = pytest.importorskip("lycoris.functional.lokr")
    w1 = torch.randn(2, 3)
    w2a, w2b = torch.randn(4, 2), torch.randn(2, 5 * 9)
    ours = fn.lokr_delta(w1=w1, w2a=w2a, w2b=w2b, shape=(8, 15, 3, 3))
    ref = lokr.kron_weight(w1, None, None, None, w2a, w2b, None, scale=1.0, backend="torch")
    assert torch.allclose(ours, ref.reshape(8, 15, 3, 3), atol=1e-4)


@pytest.mark.parametrize(
    "dim, factor, expected",
    # from LyCORIS' documented table
    [(127, -1, (1, 127)), (128, -1, (8, 16)), (128, 4, (4, 32)), (250, -1, (10, 25)), (250, 8, (5, 50)),
     (512, 8, (8, 64)), (1024, -1, (32, 32)), (1024, 16, (16, 64))],
)  # fmt: skip
def test_factorization_table(dim, factor, expected):
    assert fn.factorization(dim, factor) == expected


def test_factorization_matches_lycoris_on_sd_widths():
    general = pytest.importorskip("lycoris.functional.general")
    for dim in (320, 360, 640, 768, 1024, 1280, 2048, 2816, 5120, 10240):
        for factor in (-1, 4, 8, 16):
            assert fn.factorization(dim, factor) == general.factorization(dim, factor), (dim, factor)


def test_scale_rules():
    down = torch.zeros(8, 4)
    assert fn.lora_scale(4.0, down) == 0.5
    assert fn.lora_scale(None, down) == 1.0  # no alpha key: scale 1
    assert fn.loha_scale(2.0, torch.zeros(4, 10)) == 0.5
    assert fn.lokr_scale(8.0, None, None) == 1.0  # both factors full: alpha ignored
    assert fn.lokr_scale(8.0, None, torch.zeros(4, 3)) == 2.0


@pytest.mark.parametrize("on_output", [True, False])
def test_dora_result_has_the_learned_magnitude(on_output):
    weight, delta = torch.randn(6, 5), torch.randn(6, 5) * 0.1
    magnitude = torch.rand(6, 1) + 0.5 if on_output else torch.rand(1, 5) + 0.5
    result = fn.dora_weight(weight, delta, magnitude)
    norms = result.norm(dim=1) if on_output else result.norm(dim=0)
    assert torch.allclose(norms, magnitude.flatten(), atol=1e-5)
    # direction is that of W + ΔW
    assert torch.allclose(
        F.normalize(result, dim=1 if on_output else 0),
        F.normalize(weight + delta, dim=1 if on_output else 0),
        atol=1e-5,
    )


def test_dora_initial_magnitude_leaves_weight_unchanged():
    weight = torch.randn(6, 4, 3, 3)
    magnitude = fn.dora_magnitude(weight)
    assert magnitude.shape == (6, 1, 1, 1)
    assert torch.allclose(fn.dora_weight(weight, torch.zeros_like(weight), magnitude), weight, atol=1e-5)
