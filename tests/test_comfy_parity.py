"""Every sampler against ComfyUI's own definitions (Restart: AUTOMATIC1111's), on a tiny SD1-shaped model.

The reference below is written from ComfyUI's comfy/k_diffusion/sampling.py (the sampler functions),
comfy/samplers.py (schedules, KSampler's denoise and step cuts, noise scaling, the inpaint wrapper),
comfy/sample.py (prepare_noise), comfy/model_sampling.py (ModelSamplingDiscrete, EPS) and
comfy/extra_samplers/uni_pc.py (sample_unipc, bh1 and bh2), in their
general form (alphas, eta, s_noise), in float64 with its own UNet calls: cond and uncond separately,
guidance on the clean-latent predictions. `python tests/test_comfy_parity.py` prints the table of the
README's sampler section.
"""
import math
import sys
from functools import partial

import numpy as np
import pytest
import scipy.stats
import torch
import torchsde
from scipy import integrate

from inkwash.nodes.formats.sampler_names import SAMPLER_NAMES
from inkwash.nodes.runtime import sampling, text_encode
from tiny_models import tiny_sd1

PROMPT, NEGATIVE, CFG, SEED = "a photo of a cat in the snow", "blurry", 6.0, 7
SHAPE = (2, 4, 8, 8)


# -- ComfyUI's ModelSamplingDiscrete (SD1's linear beta schedule) and its EPS denoiser -----------------------

class Reference:
    def __init__(self, model, pos, neg, cfg=CFG, latent=None, mask=None, mask_noise=None):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas, self.log_sigmas = sigmas.float(), sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]
        self.unet = model.unet.double()
        self.pos, self.neg, self.cfg = pos[0].embeds.double(), neg[0].embeds.double(), cfg
        self.latent, self.mask, self.mask_noise = latent, mask, mask_noise
        self.uncond = None

    def timestep(self, sigma):
        dists = torch.as_tensor(sigma).float().log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(torch.as_tensor(sigma).shape)

    def sigma(self, timestep):
        t = torch.clamp(torch.as_tensor(timestep).float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def __call__(self, x, sigma):  # CFGGuider + KSamplerX0Inpaint
        t = self.timestep(torch.as_tensor(sigma).float()).double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if self.mask is not None:
            x = x * self.mask + (self.latent + self.mask_noise * sigma) * (1 - self.mask)
        x_in = x / (sigma ** 2 + 1) ** 0.5
        batch = x.shape[0]
        out = []
        for embeds in (self.pos, self.neg):
            eps = self.unet(x_in, t, encoder_hidden_states=embeds.repeat(batch, 1, 1)).sample
            out.append(x - eps * sigma)
        cond, uncond = out
        denoised = uncond + (cond - uncond) * self.cfg
        self.uncond = uncond
        if self.mask is not None:
            denoised = denoised * self.mask + self.latent * (1 - self.mask)
            self.uncond = uncond * self.mask + self.latent * (1 - self.mask)
        return denoised


# -- schedules (comfy/samplers.py) -----------------------------------------------------------------------------

def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.):
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def normal_scheduler(s, steps, sgm=False):
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    add_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            add_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(ts)) for ts in timesteps]
    return torch.FloatTensor(sigs + ([0.0] if add_zero else []))


def simple_scheduler(s, steps):
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def beta_scheduler(s, steps, alpha=0.6, beta=0.6):
    total = len(s.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigs, last_t = [], -1
    for t in ts:
        if t != last_t:
            sigs += [float(s.sigmas[int(t)])]
        last_t = t
    return torch.FloatTensor(sigs + [0.0])


def ddim_scheduler(s, steps):
    x = 1
    if math.isclose(float(s.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(s.sigmas) // steps, 1)
    while x < len(s.sigmas):
        sigs += [float(s.sigmas[x])]
        x += ss
    return torch.FloatTensor(sigs[::-1])


def linear_quadratic_schedule(s, steps, threshold_noise=0.025):
    if steps == 1:
        sigma_schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear_sigma_schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        threshold_noise_step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = threshold_noise_step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * threshold_noise_step_diff / (quadratic_steps ** 2)
        const = quadratic_coef * (linear_steps ** 2)
        quadratic_sigma_schedule = [quadratic_coef * (i ** 2) + linear_coef * i + const for i in range(linear_steps, steps)]
        sigma_schedule = [1.0 - x for x in linear_sigma_schedule + quadratic_sigma_schedule + [1.0]]
    return torch.FloatTensor(sigma_schedule) * s.sigma_max


def kl_optimal_scheduler(n, sigma_min, sigma_max):
    adj_idxs = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = adj_idxs.new_zeros(n + 1)
    sigmas[:-1] = (adj_idxs * math.atan(sigma_min) + (1 - adj_idxs) * math.atan(sigma_max)).tan_()
    return sigmas


def calculate_sigmas(s, scheduler, steps):
    if scheduler == "karras":
        return get_sigmas_karras(steps, float(s.sigma_min), float(s.sigma_max))
    if scheduler == "exponential":
        return append_zero(torch.linspace(math.log(float(s.sigma_max)), math.log(float(s.sigma_min)), steps).exp())
    if scheduler == "kl_optimal":
        return kl_optimal_scheduler(steps, float(s.sigma_min), float(s.sigma_max))
    return {"normal": normal_scheduler, "sgm_uniform": partial(normal_scheduler, sgm=True), "simple": simple_scheduler,
            "beta": beta_scheduler, "ddim_uniform": ddim_scheduler,
            "linear_quadratic": linear_quadratic_schedule}[scheduler](s, steps)


def ksampler_sigmas(s, sampler, scheduler, steps, denoise=1.0):  # KSampler.calculate_sigmas + set_steps
    def calc(n):
        if sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
            sig = calculate_sigmas(s, scheduler, n + 1)
            return torch.cat([sig[:-2], sig[-1:]])
        return calculate_sigmas(s, scheduler, n)
    if denoise > 0.9999:
        return calc(steps)
    return calc(int(steps / denoise))[-(steps + 1):]


# -- noise (comfy/sample.py, comfy/k_diffusion/sampling.py) ------------------------------------------------------

def prepare_noise(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), device="cpu")


def default_noise_sampler(x, seed):
    generator = torch.Generator("cpu").manual_seed(seed + 1)  # seed + 1 on the CPU
    return lambda sigma, sigma_next: torch.randn(x.size(), generator=generator, dtype=torch.float32).double()


class BrownianTreeNoiseSampler:
    def __init__(self, x, sigma_min, sigma_max, seed):
        self.tree = torchsde.BrownianTree(torch.as_tensor(sigma_min), torch.zeros(x.shape), torch.as_tensor(sigma_max),
                                          entropy=seed)

    def __call__(self, sigma, sigma_next):
        t0, t1 = torch.as_tensor(sigma).float(), torch.as_tensor(sigma_next).float()
        a, b, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        return (self.tree(a, b) * sign / (t1 - t0).abs().sqrt()).double()


# -- the samplers (comfy/k_diffusion/sampling.py), for an EPS model: alpha = 1, lambda = -log(sigma) -----------

def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.):
    if not eta:
        return sigma_to, 0.
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


sigma_fn = lambda t: t.neg().exp()  # noqa: E731
t_fn = lambda sigma: sigma.log().neg()  # noqa: E731


def sample_euler(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(model, x, sigmas, ns, eta=1., s_noise=1.):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i]) + ns(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_heun(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


def sample_heunpp2(model, x, sigmas, ns):
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def sample_dpm_2(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            x = x + to_d(x_2, sigma_mid, model(x_2, sigma_mid)) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_dpm_2_ancestral(model, x, sigmas, ns, eta=1.):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            x = x + to_d(x_2, sigma_mid, model(x_2, sigma_mid)) * (sigma_down - sigmas[i])
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def sample_lms(model, x, sigmas, ns, order=4):
    sigmas_cpu = sigmas.numpy()

    def coeff(order, t, i, j):
        def fn(tau):
            prod = 1.
            for k in range(order):
                if j != k:
                    prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
            return prod
        return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]

    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur = min(i + 1, order)
            x = x + sum(coeff(cur, sigmas_cpu, i, j) * d for j, d in zip(range(cur), reversed(ds)))
    return x


def sample_dpmpp_2s_ancestral(model, x, sigmas, ns, eta=1.):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * r).expm1() * denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * model(x_2, sigma_fn(s))
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def sample_dpmpp_sde(model, x, sigmas, ns, eta=1., s_noise=1., r=1 / 2):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = sigma_fn(lambda_s_1)
        alpha_s, alpha_s_1, alpha_t = sigmas[i] * lambda_s.exp(), sigma_s_1 * lambda_s_1.exp(), sigmas[i + 1] * lambda_t.exp()
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        x_2 = x_2 + alpha_s_1 * ns(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1)
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def sample_dpmpp_2m(model, x, sigmas, ns):
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised)
        old_denoised = denoised
    return x


def sample_dpmpp_2m_sde(model, x, sigmas, ns, eta=1., s_noise=1., solver_type="midpoint"):
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_3m_sde(model, x, sigmas, ns, eta=1., s_noise=1.):
    denoised_1, denoised_2, h, h_1, h_2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def sample_ddpm(model, x, sigmas, ns):  # generic_step_sampler + DDPMSampler_step
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        noise = (x - denoised) / sigma
        x = x / torch.sqrt(1.0 + sigma ** 2.0)
        alpha_cumprod, alpha_cumprod_prev = 1 / ((sigma * sigma) + 1), 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * noise / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            mu += ((1 - alpha) * (1. - alpha_cumprod_prev) / (1. - alpha_cumprod)).sqrt() * ns(sigma, sigma_prev)
        x = mu
        if sigmas[i + 1] != 0:
            x *= torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def sample_lcm(model, x, sigmas, ns):
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]  # EPS.noise_scaling
    return x


def _adams(x, dt, d, buf, order):
    if order == 1:
        return x + dt * d
    if order == 2:
        return x + dt * (3 * d - buf[-1]) / 2
    if order == 3:
        return x + dt * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
    return x + dt * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24


def sample_ipndm(model, x, sigmas, ns, max_order=4):
    buf = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        x = denoised if sigmas[i + 1] == 0 else _adams(x, sigmas[i + 1] - sigmas[i], d, buf, min(max_order, i + 1))
        buf = (buf + [d])[-(max_order - 1):]
    return x


def sample_ipndm_v(model, x, sigmas, ns, max_order=4):
    buf, t = [], sigmas
    for i in range(len(sigmas) - 1):
        denoised = model(x, t[i])
        d = (x - denoised) / t[i]
        order = min(max_order, i + 1)
        if t[i + 1] == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t[i + 1] - t[i]) * d
        elif order == 2:
            h_n, h_n_1 = t[i + 1] - t[i], t[i] - t[i - 1]
            x_next = x + h_n * ((2 + h_n / h_n_1) / 2 * d - (h_n / h_n_1) / 2 * buf[-1])
        elif order == 3:
            h_n, h_n_1, h_n_2 = t[i + 1] - t[i], t[i] - t[i - 1], t[i - 1] - t[i - 2]
            temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            coeff1 = (2 + (h_n / h_n_1)) / 2 + temp
            coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp
            x_next = x + h_n * (coeff1 * d + coeff2 * buf[-1] + temp * h_n_1 / h_n_2 * buf[-2])
        else:
            h_n, h_n_1, h_n_2, h_n_3 = t[i + 1] - t[i], t[i] - t[i - 1], t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
            temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))) \
                * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
            coeff1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
            coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3)))) * temp2
            coeff3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))) * (1 + h_n_2 / h_n_3)) * temp2
            coeff4 = -temp2 * (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))) * h_n_1 / h_n_2
            x_next = x + h_n * (coeff1 * d + coeff2 * buf[-1] + coeff3 * buf[-2] + coeff4 * buf[-3])
        buf = (buf + [d])[-(max_order - 1):]
        x = x_next
    return x


def sample_deis(model, x, sigmas, ns, max_order=3, N=10000):  # deis.py, "tab" mode
    eps_s, smin, smax = 1e-3, torch.tensor(0.002), torch.tensor(80.)
    beta_d = 2 * (np.log(smin ** 2 + 1) / eps_s - np.log(smax ** 2 + 1)) / (eps_s - 1)
    beta_min = np.log(smax ** 2 + 1) - 0.5 * beta_d
    t_steps = ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coeffs = []
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        taus = torch.linspace(t_cur, t_next, N).requires_grad_(True)
        with torch.enable_grad():
            alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
            alpha.log().sum().backward()
        integrand = (-0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))).detach()
        prev_t = t_steps[[i - k for k in range(order)]]
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly *= (taus.detach() - prev_t[k]) / (prev_t[j] - prev_t[k])
            row.append(torch.sum(integrand * poly) * (t_next - t_cur) / N)
        coeffs.append(row)
    buf = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            x_next = x + coeffs[i][0] * d + sum(c * b for c, b in zip(coeffs[i][1:], reversed(buf)))
        buf = (buf + [d])[-(max_order - 1):]
        x = x_next
    return x


def res_multistep(model, x, sigmas, ns, eta=1., cfg_pp=False):
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond_denoised = model.uncond
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond_denoised) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1_fn(-h) - phi2_fn(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_fn(-h) / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond_denoised)
                x = sigma_fn(h) * x + h * (b1 * uncond_denoised + b2 * old_denoised)
            else:
                x = sigma_fn(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigma_up
        old_denoised = uncond_denoised if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def sample_gradient_estimation(model, x, sigmas, ns, ge_gamma=2., cfg_pp=False):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], model.uncond if cfg_pp else denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_er_sde(model, x, sigmas, ns, s_noise=1.0, max_stage=3):
    noise_scaler = lambda x: x * ((x ** 0.3).exp() + 10.0)  # noqa: E731
    num_integration_points = 200.0
    point_indice = torch.arange(0, num_integration_points, dtype=torch.float32)
    er_lambdas = t_fn(sigmas).neg().exp()
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        stage_used = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / er_lambda_s, sigmas[i + 1] / er_lambda_t
            r = noise_scaler(er_lambda_t) / noise_scaler(er_lambda_s)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stage_used >= 2:
                dt = er_lambda_t - er_lambda_s
                lambda_step_size = -dt / num_integration_points
                lambda_pos = er_lambda_t + point_indice * lambda_step_size
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * lambda_step_size
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(er_lambda_t)) * denoised_d
                if stage_used >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * lambda_step_size
                    denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * noise_scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * (er_lambda_t ** 2 - er_lambda_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


def ei_h_phi_1(h):
    return torch.expm1(h)


def ei_h_phi_2(h):
    return (torch.expm1(h) - h) / h


def sample_seeds_2(model, x, sigmas, ns, eta=1., s_noise=1., r=0.5, solver_type="phi_1"):
    inject_noise = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = sigma_fn(lambda_s_1)
        alpha_s_1, alpha_t = sigma_s_1 * lambda_s_1.exp(), sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * ns(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1)
        if solver_type == "phi_1":
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * ei_h_phi_1(-h_eta) * torch.lerp(denoised, denoised_2, 1 / (2 * r))
        else:
            b2 = ei_h_phi_2(-h_eta) / r
            b1 = ei_h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            segment_factor = (r - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def sample_seeds_3(model, x, sigmas, ns, eta=1., s_noise=1., r_1=1. / 3, r_2=2. / 3):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = sigma_fn(lambda_s_1), sigma_fn(lambda_s_2)
        alpha_s_1, alpha_s_2 = sigma_s_1 * lambda_s_1.exp(), sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r_1 * h_eta) * denoised
        sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * ns(sigmas[i], sigma_s_1)
        x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1)
        a3_2 = r_2 / r_1 * ei_h_phi_2(-r_2 * h_eta)
        a3_1 = ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        segment_factor = (r_1 - r_2) * h * eta
        sde_noise = sde_noise * segment_factor.exp() + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_1, sigma_s_2)
        x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2)
        b3 = ei_h_phi_2(-h_eta) / r_2
        b1 = ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        segment_factor = (r_2 - 1) * h * eta
        sde_noise = sde_noise * segment_factor.exp() + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_2, sigmas[i + 1])
        x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def sample_euler_ancestral_cfg_pp(model, x, sigmas, ns, eta=1., s_noise=1.):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s, alpha_t = sigmas[i] * t_fn(sigmas[i]).exp(), sigmas[i + 1] * t_fn(sigmas[i + 1]).exp()
            d = to_d(x, sigmas[i], alpha_s * model.uncond)
            sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
            x = alpha_t * denoised + alpha_t * sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, ns, eta=1.):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond_denoised = model.uncond
        guidance_vector = denoised - uncond_denoised
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], uncond_denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * 0.5).expm1() * uncond_denoised
            model(x_2, sigma_fn(s))
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * model.uncond
        if sigmas[i + 1] > 0:
            x = x + ns(sigmas[i], sigmas[i + 1]) * sigma_up
        x += guidance_vector
    return x


def sample_dpmpp_2m_cfg_pp(model, x, sigmas, ns):
    old_uncond_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond_denoised = model.uncond
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond_denoised is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond_denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            denoised_mix = -torch.exp(-h) * uncond_denoised - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond_denoised)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond_denoised = uncond_denoised
    return x


def _dpm_solver(model, x, sigmas, adaptive):
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    t_start, t_end = t_fn(sigmas[0]), t_fn(sigma_min)

    def eps(cache, key, x, t):
        if key not in cache:
            cache[key] = (x - model(x, sigma_fn(t))) / sigma_fn(t)
        return cache[key]

    def step_1(x, t, t_next, cache):
        return x - sigma_fn(t_next) * (t_next - t).expm1() * eps(cache, "eps", x, t)

    def step_2(x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        e = eps(cache, "eps", x, t)
        s1 = t + r1 * h
        e1 = eps(cache, "eps_r1", x - sigma_fn(s1) * (r1 * h).expm1() * e, s1)
        return x - sigma_fn(t_next) * h.expm1() * e - sigma_fn(t_next) / (2 * r1) * h.expm1() * (e1 - e)

    def step_3(x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        e = eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        e1 = eps(cache, "eps_r1", x - sigma_fn(s1) * (r1 * h).expm1() * e, s1)
        u2 = x - sigma_fn(s2) * (r2 * h).expm1() * e - sigma_fn(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e1 - e)
        e2 = eps(cache, "eps_r2", u2, s2)
        return x - sigma_fn(t_next) * h.expm1() * e - sigma_fn(t_next) / r2 * (h.expm1() / h - 1) * (e2 - e)

    if not adaptive:
        nfe = len(sigmas) - 1
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            x = (step_1, step_2, step_3)[order - 1](x, ts[i], ts[i + 1], {})
        return x
    s, x_prev, h, errs = t_start, x, 0.05, []
    while s < t_end - 1e-5:  # order 3, rtol 0.05, atol 0.0078, PID (0, 1, 0), accept_safety 0.81
        cache = {}
        t = torch.minimum(t_end, s + h)
        x_low, x_high = step_2(x, s, t, cache, r1=1 / 3), step_3(x, s, t, cache)
        delta = torch.maximum(torch.tensor(0.0078), 0.05 * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        inv = 1 / (float(error) + 1e-8)
        errs = errs or [inv] * 3
        errs[0] = inv
        factor = 1 + math.atan(errs[0] ** (1 / 3) - 1)
        if factor >= 0.81:
            errs[2], errs[1] = errs[1], errs[0]
            x_prev, x, s = x_low, x_high, t
        h *= factor
    return x


def restart_sampler(model, x, sigmas, ns, s_noise=1.):  # AUTOMATIC1111's modules/sd_samplers_extra.py
    step_list = []
    steps = sigmas.shape[0] - 1
    restart_list = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = get_sigmas_karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + ns(old_sigma, new_sigma) * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        d = to_d(x, old_sigma, model(x, old_sigma))
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            x = x + (d + to_d(x_2, new_sigma, model(x_2, new_sigma))) / 2 * dt
        last_sigma = new_sigma
    return x


def sample_unipc(model, x, sigmas, ns, variant="bh1"):  # comfy/extra_samplers/uni_pc.py
    """UniPC as ComfyUI runs it: multistep, data prediction, order min(3, steps - 1), lower order at the
    start and the end, corrector on every step but the last, in the variance-preserving form whose time is
    sigma itself (SigmaConvert), the last step to sigma 0.001 and the result divided by its alpha."""
    t = sigmas.double().clone()
    if t[-1] == 0:
        t[-1] = 0.001
    steps, order = len(t) - 1, min(3, len(t) - 2)
    alpha, std = (1 + t ** 2) ** -0.5, t * (1 + t ** 2) ** -0.5
    lam = alpha.log() - std.log()
    data = lambda x, i: model(x / alpha[i], sigmas[i])  # (x - std * eps) / alpha, eps read off the denoiser

    def update(x, prev, i, n, corrector):  # multistep_uni_pc_bh_update, predict_x0; prev[k] is at step i - 1 - k
        j = i - 1
        hh = lam[j] - lam[i]  # -h
        rks = [(lam[j - k] - lam[j]) / -hh for k in range(1, n)]
        d1s = [(prev[k] - prev[0]) / rk for k, rk in zip(range(1, n), rks)]
        rks = torch.tensor(rks + [1.0], dtype=torch.float64)
        h_phi_1 = torch.expm1(hh)
        h_phi_k, factorial, b_h = h_phi_1 / hh - 1, 1, hh if variant == "bh1" else torch.expm1(hh)
        r, b = [], []
        for k in range(1, n + 1):
            r.append(rks ** (k - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r, b = torch.stack(r), torch.stack(b)
        x_base = std[i] / std[j] * x - alpha[i] * h_phi_1 * prev[0]
        x_t = x_base
        if d1s:
            rhos_p = torch.tensor([0.5], dtype=torch.float64) if n == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
            x_t = x_base - alpha[i] * b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
        if not corrector:
            return x_t, None
        model_t = data(x_t, i)
        rhos_c = torch.tensor([0.5], dtype=torch.float64) if n == 1 else torch.linalg.solve(r, b)
        corr = sum((rho * d for rho, d in zip(rhos_c[:-1], d1s)), torch.zeros_like(x))
        return x_base - alpha[i] * b_h * (corr + rhos_c[-1] * (model_t - prev[0])), model_t

    x = x * alpha[0]
    prev = [data(x, 0)]
    for i in range(1, steps + 1):
        x, model_x = update(x, prev, i, min(order, i, steps + 1 - i), corrector=i < steps)
        prev = [model_x] + prev[:order - 1]
    return x / alpha[-1]


REFERENCE = {
    "euler": (sample_euler, None), "ddim": (sample_euler, None),
    "euler_cfg_pp": (partial(sample_euler_ancestral_cfg_pp, eta=0.0, s_noise=0.0), None),
    "euler_ancestral": (sample_euler_ancestral, "randn"),
    "euler_ancestral_cfg_pp": (sample_euler_ancestral_cfg_pp, "randn"),
    "heun": (sample_heun, None), "heunpp2": (sample_heunpp2, None),
    "exp_heun_2_x0": (partial(sample_seeds_2, eta=0.0, s_noise=0.0, r=1.0, solver_type="phi_2"), None),
    "exp_heun_2_x0_sde": (partial(sample_seeds_2, r=1.0, solver_type="phi_2"), "randn"),
    "dpm_2": (sample_dpm_2, None), "dpm_2_ancestral": (sample_dpm_2_ancestral, "randn"),
    "lms": (sample_lms, None),
    "dpm_fast": (lambda m, x, s, ns: _dpm_solver(m, x, s, adaptive=False), None),
    "dpm_adaptive": (lambda m, x, s, ns: _dpm_solver(m, x, s, adaptive=True), None),
    "dpmpp_2s_ancestral": (sample_dpmpp_2s_ancestral, "randn"),
    "dpmpp_2s_ancestral_cfg_pp": (sample_dpmpp_2s_ancestral_cfg_pp, "randn"),
    "dpmpp_sde": (sample_dpmpp_sde, "brownian"), "dpmpp_sde_gpu": (sample_dpmpp_sde, "brownian"),
    "dpmpp_2m": (sample_dpmpp_2m, None), "dpmpp_2m_cfg_pp": (sample_dpmpp_2m_cfg_pp, None),
    "dpmpp_2m_sde": (sample_dpmpp_2m_sde, "brownian"), "dpmpp_2m_sde_gpu": (sample_dpmpp_2m_sde, "brownian"),
    "dpmpp_2m_sde_heun": (partial(sample_dpmpp_2m_sde, solver_type="heun"), "brownian"),
    "dpmpp_2m_sde_heun_gpu": (partial(sample_dpmpp_2m_sde, solver_type="heun"), "brownian"),
    "dpmpp_3m_sde": (sample_dpmpp_3m_sde, "brownian"), "dpmpp_3m_sde_gpu": (sample_dpmpp_3m_sde, "brownian"),
    "ddpm": (sample_ddpm, "randn"), "lcm": (sample_lcm, "randn"),
    "ipndm": (sample_ipndm, None), "ipndm_v": (sample_ipndm_v, None), "deis": (sample_deis, None),
    "res_multistep": (partial(res_multistep, eta=0.0), "randn"),  # ComfyUI draws, and scales by 0
    "res_multistep_cfg_pp": (partial(res_multistep, eta=0.0, cfg_pp=True), "randn"),
    "res_multistep_ancestral": (res_multistep, "randn"),
    "res_multistep_ancestral_cfg_pp": (partial(res_multistep, cfg_pp=True), "randn"),
    "gradient_estimation": (sample_gradient_estimation, None),
    "gradient_estimation_cfg_pp": (partial(sample_gradient_estimation, cfg_pp=True), None),
    "er_sde": (sample_er_sde, "randn"), "seeds_2": (sample_seeds_2, "randn"), "seeds_3": (sample_seeds_3, "randn"),
    "restart": (restart_sampler, "randn"),
    "uni_pc": (sample_unipc, None), "uni_pc_bh2": (partial(sample_unipc, variant="bh2"), None),
}
SCHEDULER_FOR = {"lms": "normal", "dpm_2": "normal", "heunpp2": "simple", "dpmpp_2m_sde": "beta",
                 "res_multistep": "kl_optimal", "er_sde": "sgm_uniform", "deis": "exponential"}
STEPS_FOR = {"restart": 20}  # Restart walks back up from 20 steps on


def comfyui_ksampler(ref, sampler, scheduler, steps, latent, seed=SEED, denoise=1.0, start=None, last=None,
                     force_full_denoise=False, add_noise=True):
    """comfy.sample.sample -> KSampler.sample -> KSAMPLER.sample on the reference model."""
    sigmas = ksampler_sigmas(ref, sampler, scheduler, steps, denoise)
    if last is not None and last < len(sigmas) - 1:
        sigmas = sigmas[:last + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start is not None:
        sigmas = sigmas[start:]
    noise = prepare_noise(latent.shape, seed) if add_noise else torch.zeros(latent.shape)
    noise, latent = noise.double(), latent.double()
    fn, kind = REFERENCE[sampler]
    ns = None
    if kind == "randn":
        ns = default_noise_sampler(noise, seed)
    elif kind == "brownian":
        ns = BrownianTreeNoiseSampler(noise, sigmas[sigmas > 0].min(), sigmas.max(), seed)
    s0 = sigmas[0]
    max_denoise = math.isclose(float(ref.sigma_max), float(s0), rel_tol=1e-05) or s0 > ref.sigma_max
    x = noise * (torch.sqrt(1.0 + s0.double() ** 2.0) if max_denoise else s0.double()) + latent
    with torch.no_grad():  # sigmas stay float32 as in ComfyUI, so the Brownian tree is read at the same times
        return fn(ref, x, sigmas, ns).float()


@pytest.fixture(scope="module")
def sd1():
    model, clip, _ = tiny_sd1()
    return model, text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE)


@pytest.fixture(scope="module")
def reference():
    model, clip, _ = tiny_sd1()  # its own copy of the weights, in float64
    return Reference(model, text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE))


def ours(sd1, sampler, scheduler, steps, latent, seed=SEED, **kw):
    model, pos, neg = sd1
    return sampling.sample(model, pos, neg, {"samples": latent}, seed, steps, CFG, sampler, scheduler, **kw)["samples"]


def relative_difference(a, b):
    return float((a - b).abs().max() / b.abs().max())


# -- every sampler -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_sampler_matches_comfyui(sd1, reference, sampler):
    scheduler = SCHEDULER_FOR.get(sampler, "karras")
    steps = STEPS_FOR.get(sampler, 5)
    theirs = comfyui_ksampler(reference, sampler, scheduler, steps, torch.zeros(SHAPE))
    mine = ours(sd1, sampler, scheduler, steps, torch.zeros(SHAPE))
    # float32 against float64: rounding only (the adaptive solver's step choices amplify it a little)
    assert relative_difference(mine, theirs) < (1e-3 if sampler == "dpm_adaptive" else 1e-4), sampler


@pytest.mark.parametrize("sampler, scheduler, steps", [("uni_pc", "normal", 3), ("uni_pc_bh2", "simple", 9)])
def test_unipc_step_orders_match_comfyui(sd1, reference, sampler, scheduler, steps):
    """Few steps: order 2 with no third-order step; many: order 3 between the lower-order start and end."""
    theirs = comfyui_ksampler(reference, sampler, scheduler, steps, torch.zeros(SHAPE))
    assert relative_difference(ours(sd1, sampler, scheduler, steps, torch.zeros(SHAPE)), theirs) < 1e-4


@pytest.mark.parametrize("scheduler", ["normal", "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                                       "beta", "linear_quadratic", "kl_optimal"])
def test_schedules_match_comfyui(reference, scheduler):
    from inkwash.nodes.runtime import sigmas as schedules
    table = schedules.DiscreteSchedule(tiny_sd1()[0].scheduler_config)
    for steps in (2, 4, 9):
        torch.testing.assert_close(schedules.build(table, scheduler, steps),
                                   calculate_sigmas(reference, scheduler, steps), rtol=1e-6, atol=0)


def test_img2img_denoise_runs_steps_of_a_longer_schedule(sd1, reference):
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    theirs = comfyui_ksampler(reference, "dpmpp_2m", "karras", 6, start, denoise=0.5)
    mine = ours(sd1, "dpmpp_2m", "karras", 6, start, denoise=0.5)
    assert relative_difference(mine, theirs) < 1e-4


def test_ksampler_advanced_split_matches_comfyui(sd1, reference):
    part = ours(sd1, "euler_ancestral", "normal", 6, torch.zeros(SHAPE), end_step=3, return_with_leftover_noise=True)
    theirs_part = comfyui_ksampler(reference, "euler_ancestral", "normal", 6, torch.zeros(SHAPE), last=3)
    assert relative_difference(part, theirs_part) < 1e-4
    rest = ours(sd1, "euler_ancestral", "normal", 6, part, start_step=3, add_noise=False)
    theirs_rest = comfyui_ksampler(reference, "euler_ancestral", "normal", 6, theirs_part, start=3, add_noise=False)
    assert relative_difference(rest, theirs_rest) < 1e-4


def test_inpainting_noise_mask_matches_comfyui(sd1):
    model, clip, _ = tiny_sd1()
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0
    noise = prepare_noise(SHAPE, SEED)
    ref = Reference(model, text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE),
                    latent=start.double(), mask=mask.double(), mask_noise=noise.double())
    theirs = comfyui_ksampler(ref, "euler", "normal", 4, start, denoise=0.7)
    mine = ours(sd1, "euler", "normal", 4, start, denoise=0.7)
    mine_with_mask = sampling.sample(sd1[0], sd1[1], sd1[2], {"samples": start, "noise_mask": mask}, SEED, 4, CFG,
                                     "euler", "normal", denoise=0.7)["samples"]
    assert relative_difference(mine_with_mask, theirs) < 1e-4
    assert not torch.allclose(mine, mine_with_mask)


def main():
    """The README table: sampler, scheduler, measured difference from the reference."""
    torch.set_num_threads(1)  # as conftest: tiny models crawl on shared cores with more
    model, clip, _ = tiny_sd1()
    sd = (model, text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE))
    ref_model, ref_clip, _ = tiny_sd1()
    ref = Reference(ref_model, text_encode.encode(ref_clip, PROMPT), text_encode.encode(ref_clip, NEGATIVE))
    names = SAMPLER_NAMES[SAMPLER_NAMES.index(sys.argv[1]):] if len(sys.argv) > 1 else SAMPLER_NAMES
    for sampler in names:
        scheduler = SCHEDULER_FOR.get(sampler, "karras")
        steps = STEPS_FOR.get(sampler, 5)
        diff = relative_difference(ours(sd, sampler, scheduler, steps, torch.zeros(SHAPE)),
                                   comfyui_ksampler(ref, sampler, scheduler, steps, torch.zeros(SHAPE)))
        print(f"| {sampler} | {scheduler} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    main()
