"""A1111 sampler names (and sd-scripts' `--ss`/`sample_sampler` names) as diffusers schedulers.

A1111 runs k-diffusion samplers; diffusers ports most of them as schedulers. Each entry here
names the scheduler class and the settings that make it behave like the A1111 sampler of the same
name: Karras sigmas for "... Karras", the SDE variant of DPM-Solver++ for "... SDE", the
ancestral classes for "... a", A1111's UniPC defaults (bh1, order 3), and A1111's uniform
timesteps for DDIM/PLMS. Names missing from diffusers (DPM++ 2S a, DPM fast, DPM adaptive,
Restart) are not offered, rather than silently replaced by something else.

Known small differences: A1111's DPM2 samplers drop the next-to-last sigma and its SDE samplers
draw Brownian noise from the image seed on the GPU; diffusers does neither exactly, so images are
close to, not identical with, A1111's.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import LorakitError


class SamplerError(LorakitError):
    """A sampler name lorakit does not know."""


# k-diffusion samplers: timesteps spaced like k-diffusion's `get_sigmas` (linspace over 0..999)
_K = {"timestep_spacing": "linspace", "steps_offset": 0}
# A1111's DDIM/PLMS: timesteps 1, 1+1000//n, ... (leading spacing, offset 1), no x0 clipping
_UNIFORM = {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}
_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}


@dataclass(frozen=True)
class Sampler:
    name: str  # the A1111 name, written into the PNG parameters
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # A1111's k_* aliases and sd-scripts' names
    # diffusers' DPM-Solver spaces its "linspace" timesteps unlike k-diffusion; these samplers get
    # k-diffusion's timesteps (999 to 0 in steps-1 equal parts) passed in explicitly
    k_timesteps: bool = False

    @property
    def karras(self) -> bool:
        return bool(self.options.get("use_karras_sigmas"))

    @property
    def ancestral(self) -> bool:
        return "Ancestral" in self.scheduler

    @property
    def stochastic(self) -> bool:
        """Draws fresh noise at each step (ancestral or SDE): the seed matters beyond the start."""
        return (
            self.ancestral
            or self.scheduler == "DPMSolverSDEScheduler"
            or "sde" in str(self.options.get("algorithm_type", ""))
        )


def _s(name: str, scheduler: str, options: dict | None = None, *aliases: str) -> Sampler:
    options = dict(options or {})
    k_timesteps = scheduler.startswith("DPMSolverMultistep") and not options.get("use_karras_sigmas")
    return Sampler(name, scheduler, options, aliases, k_timesteps)


SAMPLERS: tuple[Sampler, ...] = (
    _s("Euler", "EulerDiscreteScheduler", _K, "k_euler", "euler"),
    _s("Euler a", "EulerAncestralDiscreteScheduler", _K, "k_euler_a", "k_euler_ancestral", "euler_a"),
    _s("Heun", "HeunDiscreteScheduler", _K, "k_heun", "heun"),
    _s("DPM2", "KDPM2DiscreteScheduler", _K, "k_dpm_2", "dpm_2"),
    _s("DPM2 a", "KDPM2AncestralDiscreteScheduler", _K, "k_dpm_2_a", "dpm_2_a"),
    _s("DPM2 Karras", "KDPM2DiscreteScheduler", {**_K, **_KARRAS}, "k_dpm_2_ka"),
    _s("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", {**_K, **_KARRAS}, "k_dpm_2_a_ka"),
    _s(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {**_K, "algorithm_type": "dpmsolver++"},
        "k_dpmpp_2m",
        "dpmsolver++",
    ),
    _s(
        "DPM++ 2M Karras",
        "DPMSolverMultistepScheduler",
        {**_K, "algorithm_type": "dpmsolver++", **_KARRAS},
        "k_dpmpp_2m_ka",
    ),
    _s("DPM++ SDE", "DPMSolverSDEScheduler", _K, "k_dpmpp_sde"),
    _s("DPM++ SDE Karras", "DPMSolverSDEScheduler", {**_K, **_KARRAS}, "k_dpmpp_sde_ka"),
    _s("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {**_K, **_SDE}, "k_dpmpp_2m_sde"),
    _s("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**_K, **_SDE, **_KARRAS}, "k_dpmpp_2m_sde_ka"),
    _s("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {**_K, **_SDE, "solver_order": 3}, "k_dpmpp_3m_sde"),
    _s(
        "DPM++ 3M SDE Karras",
        "DPMSolverMultistepScheduler",
        {**_K, **_SDE, "solver_order": 3, **_KARRAS},
        "k_dpmpp_3m_sde_ka",
    ),
    _s("LMS", "LMSDiscreteScheduler", _K, "k_lms", "lms"),
    _s("LMS Karras", "LMSDiscreteScheduler", {**_K, **_KARRAS}, "k_lms_ka"),
    _s("DDIM", "DDIMScheduler", {**_UNIFORM, "clip_sample": False}, "ddim"),
    _s("PLMS", "PNDMScheduler", {**_UNIFORM, "skip_prk_steps": True}, "pndm", "plms"),
    # A1111's UniPC settings: variant bh1, order 3, lower order final, time-uniform steps
    _s(
        "UniPC",
        "UniPCMultistepScheduler",
        {**_K, "solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "predict_x0": True},
        "uni_pc",
        "unipc",
    ),
    # sd-scripts only: DPM-Solver (noise prediction, not ++) and the single-step DPM-Solver++
    _s(
        "DPM-Solver",
        "DPMSolverMultistepScheduler",
        {**_K, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
        "dpmsolver",
    ),
    _s("DPM-Solver single", "DPMSolverSinglestepScheduler", _K, "dpmsingle"),
)

# A1111 names with no diffusers scheduler: a clear message instead of "unknown"
UNSUPPORTED = {
    "DPM++ 2S a": "DPM++ 2M",
    "DPM++ 2S a Karras": "DPM++ 2M Karras",
    "DPM fast": "DPM++ 2M",
    "DPM adaptive": "DPM++ 2M",
    "Restart": "DPM++ 2M Karras",
}

DEFAULT_SAMPLER = "DPM++ 2M Karras"


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_BY_KEY: dict[str, Sampler] = {}
for _sampler in SAMPLERS:
    for _name in (_sampler.name, *_sampler.aliases):
        _BY_KEY.setdefault(_key(_name), _sampler)


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def find_sampler(name: str, schedule_type: str | None = None) -> Sampler:
    """The sampler for an A1111 name ("DPM++ 2M Karras"), an A1111 alias ("k_dpmpp_2m_ka") or an
    sd-scripts name ("euler_a"). Case and `_`/space/`-` differences are ignored.

    schedule_type: A1111 1.9+ writes "Sampler: DPM++ 2M, Schedule type: Karras"; "Karras" here
    picks the Karras variant. "Automatic"/"Uniform"/None keep the name as it is.
    """
    wanted = name
    if schedule_type and schedule_type.strip().lower() == "karras" and not _key(name).endswith("karras"):
        wanted = f"{name} Karras"
    found = _BY_KEY.get(_key(wanted))
    if found:
        return found
    for unsupported, instead in UNSUPPORTED.items():
        if _key(unsupported) == _key(wanted):
            raise SamplerError(
                f"sampler '{name}' exists in A1111 but has no diffusers equivalent, so lorakit cannot run it. "
                f"Use a close one such as '{instead}'."
            )
    known = [s.name for s in SAMPLERS] + [a for s in SAMPLERS for a in s.aliases]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5) or difflib.get_close_matches(
        _key(name), [_key(k) for k in known], n=3, cutoff=0.5
    )
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise SamplerError(f"unknown sampler '{name}'.{hint} Known samplers: {', '.join(sampler_names())}.")


def make_scheduler(sampler: Sampler | str, base_config: dict[str, Any], seeds: list[int] | None = None):
    """A fresh scheduler for `sampler`, on the model's own noise schedule and prediction type.

    seeds: the image seeds; the Brownian-tree noise of the "DPM++ SDE" samplers is drawn from them
    (one tree per image), so an image does not change when it is generated in a batch.
    """
    import diffusers

    if isinstance(sampler, str):
        sampler = find_sampler(sampler)
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    config.update(sampler.options)
    cls = getattr(diffusers, sampler.scheduler)
    scheduler = cls.from_config(config)
    if sampler.scheduler == "DPMSolverSDEScheduler" and seeds is not None:
        scheduler.noise_sampler_seed = list(seeds)
    return scheduler


def sampler_timesteps(sampler: Sampler | str, steps: int) -> list[int] | None:
    """Explicit timesteps for samplers whose diffusers spacing differs from k-diffusion's
    (`get_sigmas`: `steps` points from 999 down to 0); None: the scheduler's own are right."""
    if isinstance(sampler, str):
        sampler = find_sampler(sampler)
    if not sampler.k_timesteps:
        return None
    if steps == 1:
        return [999]
    return [round(999 * (steps - 1 - i) / (steps - 1)) for i in range(steps)]
