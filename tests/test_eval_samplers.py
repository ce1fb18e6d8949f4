"""A1111 sampler names -> diffusers schedulers configured as A1111 runs them."""

import inspect
import math

import pytest
import torch

from lorakit.evaluation.samplers import (
    SAMPLERS,
    SamplerError,
    find_sampler,
    make_scheduler,
    sampler_timesteps,
)
from lorakit.models.families import SD1

# name -> (class, karras, stochastic (fresh noise per step), extra config that must hold)
TABLE = {
    "Euler": ("EulerDiscreteScheduler", False, False, {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", False, True, {}),
    "Heun": ("HeunDiscreteScheduler", False, False, {}),
    "DPM2": ("KDPM2DiscreteScheduler", False, False, {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", False, True, {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", True, False, {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", True, True, {}),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        False,
        False,
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", True, False, {"algorithm_type": "dpmsolver++"}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", False, True, {}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", True, True, {}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", False, True, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", True, True, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 3M SDE": (
        "DPMSolverMultistepScheduler",
        False,
        True,
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
    ),
    "DPM++ 3M SDE Karras": ("DPMSolverMultistepScheduler", True, True, {"solver_order": 3}),
    "LMS": ("LMSDiscreteScheduler", False, False, {}),
    "LMS Karras": ("LMSDiscreteScheduler", True, False, {}),
    "DDIM": ("DDIMScheduler", False, False, {"clip_sample": False, "set_alpha_to_one": False}),
    "PLMS": ("PNDMScheduler", False, False, {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", False, False, {"solver_type": "bh1", "solver_order": 3}),
    "DPM-Solver": ("DPMSolverMultistepScheduler", False, False, {"algorithm_type": "dpmsolver"}),
    "DPM-Solver single": ("DPMSolverSinglestepScheduler", False, False, {}),
}

# sd-scripts' --ss / sample_sampler names and A1111's k_* aliases
ALIASES = {
    "ddim": "DDIM",
    "pndm": "PLMS",
    "lms": "LMS",
    "k_lms": "LMS",
    "euler": "Euler",
    "k_euler": "Euler",
    "euler_a": "Euler a",
    "k_euler_a": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "k_dpm_2": "DPM2",
    "dpm_2_a": "DPM2 a",
    "k_dpm_2_a": "DPM2 a",
    "dpmsolver": "DPM-Solver",
    "dpmsolver++": "DPM++ 2M",
    "dpmsingle": "DPM-Solver single",
    "k_dpmpp_2m_ka": "DPM++ 2M Karras",
    "dpm++ 2m karras": "DPM++ 2M Karras",
    "DPM++_2M_SDE_Karras": "DPM++ 2M SDE Karras",
}


def base_config(prediction="epsilon"):
    config = SD1.config("scheduler")
    config["prediction_type"] = prediction
    return config


def sigma(alphas_cumprod, t):
    a = float(alphas_cumprod[t])
    return math.sqrt((1 - a) / a)


def test_table_covers_every_sampler():
    assert sorted(TABLE) == sorted(s.name for s in SAMPLERS)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_sampler_is_configured_as_a1111(name):
    cls, karras, stochastic, extra = TABLE[name]
    scheduler = make_scheduler(name, base_config("v_prediction"), seeds=[1])
    assert type(scheduler).__name__ == cls
    assert scheduler.config.prediction_type == "v_prediction"
    assert bool(scheduler.config.get("use_karras_sigmas", False)) is karras
    for key, value in extra.items():
        assert scheduler.config[key] == value, key
    # the model's own noise schedule, not the class default
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == 0.00085 and scheduler.config.beta_end == 0.012


def test_karras_sigmas_follow_the_karras_formula():
    """Independent: sigma_i = (smax^(1/7) + i/(n-1) (smin^(1/7) - smax^(1/7)))^7 from the model's
    alphas_cumprod, as k-diffusion's get_sigmas_karras computes it."""
    steps = 8
    for name in ("DPM++ 2M Karras", "Euler a", "LMS Karras", "DPM++ 2M SDE Karras", "Euler"):
        scheduler = make_scheduler(name, base_config())
        scheduler.set_timesteps(steps)
        ac = scheduler.alphas_cumprod
        smin, smax = sigma(ac, 0), sigma(ac, 999)
        karras = [
            (smax ** (1 / 7) + i / (steps - 1) * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
            for i in range(steps)
        ]
        got = scheduler.sigmas[:steps].double()
        matches = torch.allclose(got, torch.tensor(karras, dtype=torch.float64), rtol=1e-3)
        assert matches is find_sampler(name).karras, name
        assert float(scheduler.sigmas[-1]) == 0.0


def test_k_diffusion_timesteps_run_from_999_to_0():
    for name in ("Euler", "DPM++ 2M", "DPM++ 2M SDE"):
        scheduler = make_scheduler(name, base_config())
        timesteps = sampler_timesteps(name, 6)
        scheduler.set_timesteps(**({"timesteps": timesteps} if timesteps else {"num_inference_steps": 6}))
        got = [round(float(t)) for t in scheduler.timesteps]
        assert got == [999, 799, 599, 400, 200, 0], name


def test_ddim_and_plms_use_a1111_uniform_timesteps():
    """A1111: range(0, 1000, 1000 // n) + 1, last step first."""
    for name in ("DDIM", "PLMS"):
        scheduler = make_scheduler(name, base_config())
        scheduler.set_timesteps(10)
        expected = [t + 1 for t in range(0, 1000, 100)][::-1]
        got = list(dict.fromkeys(int(t) for t in scheduler.timesteps))  # PLMS repeats its first step
        assert got == expected, name


@pytest.mark.parametrize("name", sorted(TABLE))
def test_only_ancestral_and_sde_samplers_draw_fresh_noise(name):
    """Two steps (a second-order sampler's full step) from the same state with two different
    noise sources: stochastic samplers differ, deterministic ones give the same result."""
    stochastic = TABLE[name][2]
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    model_output = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    results = []
    for seed in (10, 20):
        scheduler = make_scheduler(name, base_config(), seeds=[seed])
        scheduler.set_timesteps(5)
        # as the pipelines do: a generator only for schedulers that take one
        takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        kwargs = {"generator": torch.Generator().manual_seed(seed)} if takes_generator else {}
        x = sample * scheduler.init_noise_sigma
        for t in scheduler.timesteps[:2]:
            x = scheduler.step(model_output, t, scheduler.scale_model_input(x, t), **kwargs).prev_sample
        results.append(x)
    differ = not torch.equal(results[0], results[1])
    assert differ is stochastic
    assert find_sampler(name).stochastic is stochastic


@pytest.mark.parametrize("alias, name", sorted(ALIASES.items()))
def test_sd_scripts_and_k_names(alias, name):
    assert find_sampler(alias).name == name


def test_a1111_schedule_type_field():
    assert find_sampler("DPM++ 2M", schedule_type="Karras").name == "DPM++ 2M Karras"
    assert find_sampler("Euler a", schedule_type="Automatic").name == "Euler a"


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(SamplerError, match="DPM\\+\\+ 2M Karras"):
        find_sampler("DPM++ 2M Karas")
    with pytest.raises(SamplerError, match="no diffusers equivalent.*DPM\\+\\+ 2M"):
        find_sampler("DPM++ 2S a")
