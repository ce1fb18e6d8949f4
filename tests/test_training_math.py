"""Noise, loss weighting and text conditioning, against the formulas computed here by hand."""

import torch

from lorakit.models.conditioning import encode, tokenize
from lorakit.models.tiny import random_model
from lorakit.training.loss import LossOptions, huber_c, snr_weight, training_loss
from lorakit.training.noise import NoiseOptions, noisy_latents, training_scheduler


def _alphas_bar():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def test_schedule_is_the_scaled_linear_ddpm_schedule():
    scheduler = training_scheduler(random_model("sd1"))
    assert torch.allclose(scheduler.alphas_cumprod.double(), _alphas_bar(), atol=1e-6)
    ztsnr = training_scheduler(random_model("sd1"), zero_terminal_snr=True)
    assert ztsnr.alphas_cumprod[-1] < 1e-6  # the last step is pure noise


def test_min_snr_and_debiased_weights():
    scheduler = training_scheduler(random_model("sd1"))
    t = torch.tensor([0, 100, 500, 999])
    a = _alphas_bar()[t]
    s = (a / (1 - a)).float()
    expected = torch.minimum(s, torch.tensor(5.0)) / s
    assert torch.allclose(snr_weight(LossOptions(min_snr_gamma=5), scheduler, t, False), expected, rtol=1e-4)
    expected_v = torch.minimum(s, torch.tensor(5.0)) / (s + 1)
    assert torch.allclose(snr_weight(LossOptions(min_snr_gamma=5), scheduler, t, True), expected_v, rtol=1e-4)
    debiased = 1 / torch.sqrt(torch.clamp(s, max=1000))
    assert torch.allclose(
        snr_weight(LossOptions(debiased_estimation_loss=True), scheduler, t, False), debiased, rtol=1e-4
    )


def test_huber_loss_and_its_snr_schedule():
    scheduler = training_scheduler(random_model("sd1"))
    t = torch.tensor([10, 900])
    a = _alphas_bar()[t].float()
    sigma = ((1 - a) / a) ** 0.5
    c = (1 - 0.1) / (1 + sigma) ** 2 + 0.1
    options = LossOptions(loss_type="huber", huber_c=0.1, huber_schedule="snr")
    assert torch.allclose(huber_c(options, scheduler, t), c, rtol=1e-5)
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    cc = c.view(2, 1, 1, 1)
    by_hand = (2 * cc * (torch.sqrt((pred - target) ** 2 + cc**2) - cc)).mean()
    assert torch.allclose(training_loss(pred, target, t, scheduler, options), by_hand, rtol=1e-5)


def test_prior_loss_weight_and_mask():
    scheduler = training_scheduler(random_model("sd1"))
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 200])
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    weighted = training_loss(
        pred, target, t, scheduler, LossOptions(), sample_weights=torch.tensor([1.0, 0.25])
    )
    assert torch.allclose(weighted, (per_sample[0] + 0.25 * per_sample[1]) / 2)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1  # top half of the image
    masked = training_loss(pred, target, t, scheduler, LossOptions(), mask=mask)
    by_hand = (((pred - target) ** 2)[:, :, :4]).sum(dim=(1, 2, 3)) / (4 * 8 * 8)
    assert torch.allclose(masked, by_hand.mean(), rtol=1e-5)


def test_noise_offset_and_ip_noise_gamma_by_hand():
    scheduler = training_scheduler(random_model("sd1"))
    latents = torch.randn(2, 4, 8, 8)
    options = NoiseOptions(noise_offset=0.1, ip_noise_gamma=0.1)
    noise, noisy, t = noisy_latents(latents, scheduler, options, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    base = torch.randn(latents.shape, generator=g)
    expected_noise = base + 0.1 * torch.randn((2, 4, 1, 1), generator=g)
    expected_t = torch.randint(0, 1000, (2,), generator=g)
    perturbed = expected_noise + 0.1 * torch.randn(latents.shape, generator=g)
    a = scheduler.alphas_cumprod[expected_t].view(2, 1, 1, 1)
    assert torch.equal(noise, expected_noise) and torch.equal(t, expected_t)
    assert torch.allclose(noisy, a.sqrt() * latents + (1 - a).sqrt() * perturbed, atol=1e-6)


def test_pyramid_noise_has_unit_std():
    scheduler = training_scheduler(random_model("sd1"))
    options = NoiseOptions(multires_noise_iterations=6, multires_noise_discount=0.3)
    noise, _, _ = noisy_latents(
        torch.zeros(2, 4, 32, 32), scheduler, options, torch.Generator().manual_seed(0)
    )
    assert abs(noise.std().item() - 1.0) < 1e-5


def test_clip_skip_and_long_captions():
    model = random_model("sd1")
    ids = tokenize(model, ["a photo of a cat"])
    hidden, pooled = encode(model, ids, clip_skip=2)
    encoder = model.text_encoders[0]
    states = encoder(ids[0], output_hidden_states=True).hidden_states
    assert pooled is None and torch.allclose(hidden, encoder.final_layer_norm(states[-2]))
    long = tokenize(model, [", ".join(["cat"] * 100)], max_token_length=150)[0]
    assert long.shape == (1, 154)
    assert long[0, 0] == 49406 and long[0, 76] == 49407 and long[0, 77] == 49406 and long[0, 153] == 49407
    hidden, _ = encode(model, [long])
    assert hidden.shape == (1, 152, 32)


def test_sdxl_conditioning_uses_penultimate_layers_and_pooled_output():
    model = random_model("sdxl")
    ids = tokenize(model, ["a cat"])
    hidden, pooled = encode(model, ids)
    first = model.text_encoders[0](ids[0], output_hidden_states=True).hidden_states[-2]
    out = model.text_encoders[1](ids[1], output_hidden_states=True)
    assert torch.allclose(hidden, torch.cat([first, out.hidden_states[-2]], dim=-1))
    assert torch.allclose(pooled, out.text_embeds)
    # OpenCLIP pads with "!" (0): an all-padding second chunk starts with an end token
    long = tokenize(model, ["a cat"], max_token_length=150)[1]
    assert long[0, 77:80].tolist() == [49406, 49407, 0] and long[0, -1] == 0
