"""Sampler and scheduler names, ComfyUI's and AUTOMATIC1111's, and the tables between them.

Torch-free, so the web layer and the PNG metadata code can read names without importing diffusers;
nodes/runtime/k_samplers.py and sigmas.py run each name.
"""
from __future__ import annotations

# ComfyUI's KSampler sampler and scheduler names, in ComfyUI's order. The *_gpu names only build ComfyUI's
# Brownian tree on the GPU: the same samplers, whose tree differs under the comfyui_nv noise rule only.
SAMPLER_NAMES: list[str] = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "ddim", "uni_pc", "uni_pc_bh2",
    "restart",  # not one of ComfyUI's: AUTOMATIC1111's Restart sampler, so its API's "Restart" runs
]
SCHEDULER_NAMES: list[str] = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                              "linear_quadratic", "kl_optimal"]

# ComfyUI's names that Inkwash does not run, so a workflow using one is refused naming it
NOT_AVAILABLE: dict[str, str] = {
    "sa_solver": "the stochastic Adams solver is not implemented",
    "sa_solver_pece": "the stochastic Adams solver is not implemented",
}


def check_sampler(name: str) -> None:
    """Raise ValueError naming the known samplers unless `name` is one Inkwash runs."""
    if name in SAMPLER_NAMES:
        return
    why = f" ({NOT_AVAILABLE[name]})" if name in NOT_AVAILABLE else ""
    raise ValueError(f"unknown sampler {name!r}{why}; known: {', '.join(SAMPLER_NAMES)}")


# -- A1111 names ---------------------------------------------------------------------------------------

# A1111 sampler -> (ComfyUI sampler, the schedule A1111's "Automatic" picks for it), in A1111's order.
# Approximations (see the README's sampler table): DDIM and DDIM CFG++ end at sigma 0 rather than at the
# lowest trained noise level, PLMS runs as iPNDM (the same Adams-Bashforth steps, a lower-order start),
# UniPC as diffusers' UniPC.
A1111_SAMPLERS: dict[str, tuple[str, str]] = {
    "DPM++ 2M": ("dpmpp_2m", "karras"),
    "DPM++ SDE": ("dpmpp_sde", "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", "exponential"),
    "DPM++ 2M SDE Heun": ("dpmpp_2m_sde_heun", "exponential"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", "karras"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", "exponential"),
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "LMS": ("lms", "normal"),
    "Heun": ("heun", "normal"),
    "DPM2": ("dpm_2", "normal"),
    "DPM2 a": ("dpm_2_ancestral", "normal"),
    "DPM fast": ("dpm_fast", "normal"),
    "DPM adaptive": ("dpm_adaptive", "normal"),
    "Restart": ("restart", "karras"),
    "DDIM": ("ddim", "ddim_uniform"),
    "DDIM CFG++": ("euler_cfg_pp", "ddim_uniform"),
    "PLMS": ("ipndm", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
    "LCM": ("lcm", "sgm_uniform"),
}

A1111_SAMPLER_ALIASES: dict[str, str] = {
    "k_euler_a": "Euler a", "k_euler_ancestral": "Euler a", "k_euler": "Euler", "k_lms": "LMS", "k_heun": "Heun",
    "k_dpm_2": "DPM2", "k_dpm_2_a": "DPM2 a", "k_dpmpp_2m": "DPM++ 2M", "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE", "k_dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "k_dpmpp_2s_a": "DPM++ 2S a",
    "k_dpmpp_3m_sde": "DPM++ 3M SDE", "k_dpm_fast": "DPM fast", "k_dpm_ad": "DPM adaptive", "ddim_cfgpp": "DDIM CFG++",
    "plms": "PLMS", "unipc": "UniPC", "k_lcm": "LCM",
}

# A1111 "Schedule type" -> ComfyUI scheduler ("Automatic" -> the sampler's own default). Polyexponential
# at A1111's rho of 1 is the exponential schedule. Align Your Steps has no ComfyUI scheduler name.
A1111_SCHEDULES: dict[str, str | None] = {
    "Automatic": None, "Uniform": "normal", "Karras": "karras", "Exponential": "exponential",
    "Polyexponential": "exponential", "SGM Uniform": "sgm_uniform", "KL Optimal": "kl_optimal", "Simple": "simple",
    "Normal": "normal", "DDIM": "ddim_uniform", "Beta": "beta",
}


def from_a1111(sampler: str, schedule: str | None = None) -> tuple[str, str]:
    """(ComfyUI sampler, scheduler) for A1111's sampler and "Schedule type" names. Accepts the pre-1.9
    combined names ("DPM++ 2M Karras") and the k_* aliases."""
    name = A1111_SAMPLER_ALIASES.get(sampler, sampler)
    for label in ("Karras", "Exponential"):  # pre-1.9 names carried the schedule in the sampler name
        base = name.removesuffix(f" {label}")
        if base != name and base in A1111_SAMPLERS:
            name = base
            if schedule in (None, "Automatic"):
                schedule = label
    if name not in A1111_SAMPLERS:
        raise ValueError(f"unsupported A1111 sampler {sampler!r}; supported: {', '.join(A1111_SAMPLERS)}")
    if schedule not in A1111_SCHEDULES and schedule is not None:
        raise ValueError(f"unsupported A1111 schedule type {schedule!r}; supported: {', '.join(A1111_SCHEDULES)}")
    comfy_sampler, automatic = A1111_SAMPLERS[name]
    return comfy_sampler, A1111_SCHEDULES.get(schedule) or automatic


# ComfyUI sampler / scheduler names -> A1111 display names. Unknown names are written as they are.
A1111_DISPLAY_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "lms": "LMS",
    "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "uni_pc_bh2": "UniPC", "lcm": "LCM", "restart": "Restart",
}
A1111_DISPLAY_SCHEDULES = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
}

# Samplers whose A1111 "Automatic" schedule is ComfyUI's normal: for them normal is written "Automatic",
# as A1111 itself writes it. For the others "Automatic" means their own default (Karras for DPM++ 2M).
AUTOMATIC_IS_NORMAL = {"euler", "euler_ancestral", "lms", "heun", "dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2",
                       "dpm_fast", "dpm_adaptive"}


def a1111_names(sampler_name, scheduler) -> tuple[str | None, str | None]:
    """(Sampler, Schedule type) as A1111 shows them, for ComfyUI's sampler and scheduler names."""
    sampler_name = sampler_name if isinstance(sampler_name, str) else None
    scheduler = scheduler if isinstance(scheduler, str) else None
    if scheduler == "normal" and sampler_name in AUTOMATIC_IS_NORMAL:
        schedule = "Automatic"
    else:
        schedule = A1111_DISPLAY_SCHEDULES.get(scheduler, scheduler)
    return A1111_DISPLAY_SAMPLERS.get(sampler_name, sampler_name), schedule
