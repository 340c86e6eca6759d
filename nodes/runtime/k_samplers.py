"""The samplers, k-diffusion style: short functions that walk a list of sigmas, the math visible.

Each takes `model(x, sigma) -> denoised` (the guided clean-latent prediction; after a call,
`model.uncond` is the unguided one, which the CFG++ samplers step along), the sample `x` in the form
x0 + sigma * noise, the sigmas (descending, usually ending in 0), `noise(sigma, sigma_next)` for the
samplers that add noise, and `callback(i, denoised)` after step i's first model call. They follow the
definitions in ComfyUI's comfy/k_diffusion/sampling.py for discrete-time (eps / v) models, so that a
workflow gives the numbers ComfyUI gives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from scipy import integrate


@dataclass(frozen=True)
class Sampler:
    run: Callable
    # "none", "randn" (fresh Gaussian per call), "brownian" (a Brownian tree: SDE samplers), "brownian_gpu" (the
    # same; ComfyUI's *_gpu names build the tree on the GPU, which the comfyui_nv noise rule follows)
    noise: str = "none"
    cfg_pp: bool = False  # steps along the unguided prediction (needs the negative even at cfg 1)


def to_d(x, sigma, denoised):
    """The Karras ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up): step down to sigma_down deterministically, then add sigma_up of noise."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def _t(sigma):  # half log-SNR time of an eps/v model: t = -log(sigma)
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


# -- first order and Heun -------------------------------------------------------------------------------------

def euler(model, x, sigmas, noise, callback):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(model, x, sigmas, noise, callback, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        callback(i, denoised)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i]) + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def heun(model, x, sigmas, noise, callback):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        callback(i, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


def heunpp2(model, x, sigmas, noise, callback):
    """Heun++: a third evaluation two sigmas ahead, weighted by sigma (Carzit's sd-webui-samplers-scheduler)."""
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        callback(i, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def dpm_2(model, x, sigmas, noise, callback):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def dpm_2_ancestral(model, x, sigmas, noise, callback, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        callback(i, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def _lms_coefficient(order, t, i, j):
    def basis(tau):
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


def lms(model, x, sigmas, noise, callback, order=4):
    sigmas_np = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current = min(i + 1, order)
            coeffs = [_lms_coefficient(current, sigmas_np, i, j) for j in range(current)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


# -- DPM-Solver (fixed-step "fast" and adaptive), in t = -log(sigma) ---------------------------------------

class _DPMSolver:
    def __init__(self, model, callback):
        self.model, self.callback = model, callback

    def eps(self, cache, key, x, t):
        if key not in cache:
            cache[key] = (x - self.model(x, _sigma(t))) / _sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def fast(self, x, t_start, t_end, nfe):
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(float(t_start), float(t_end), m + 1)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache: dict = {}
            t, t_next = ts[i], ts[i + 1]
            self.callback(i, x - _sigma(t) * self.eps(cache, "eps", x, t))
            x = (self.step_1, self.step_2, self.step_3)[order - 1](x, t, t_next, cache)
        return x

    def adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, accept_safety=0.81):
        # ComfyUI's defaults: PID coefficients p=0, i=1, d=0, i.e. an integral controller
        s, x_prev, h, errs, steps = t_start, x, h_init, [], 0
        atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
        while s < t_end - 1e-5:
            cache: dict = {}
            t = torch.minimum(t_end, s + h)
            denoised = x - _sigma(s) * self.eps(cache, "eps", x, s)
            if order == 2:
                x_low, x_high = self.step_1(x, s, t, cache), self.step_2(x, s, t, cache)
            else:
                x_low, x_high = self.step_2(x, s, t, cache, r1=1 / 3), self.step_3(x, s, t, cache)
            delta = torch.maximum(atol_t.to(x.device), rtol_t.to(x.device) * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            inv_error = 1 / (float(error) + 1e-8)
            if not errs:
                errs = [inv_error] * 3
            errs[0] = inv_error
            factor = 1 + math.atan(errs[0] ** (1 / order) - 1)
            if factor >= accept_safety:
                errs[2], errs[1] = errs[1], errs[0]
                x_prev, x, s = x_low, x_high, t
            h *= factor
            self.callback(steps, denoised)
            steps += 1
        return x


def _positive_range(sigmas):
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    return sigma_min, sigmas[0]


def dpm_fast(model, x, sigmas, noise, callback):
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _positive_range(sigmas)
    return _DPMSolver(model, callback).fast(x, _t(sigma_max), _t(sigma_min), len(sigmas) - 1)


def dpm_adaptive(model, x, sigmas, noise, callback):
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _positive_range(sigmas)
    return _DPMSolver(model, callback).adaptive(x, _t(sigma_max), _t(sigma_min))


# -- DPM-Solver++ family ------------------------------------------------------------------------------------

def dpmpp_2s_ancestral(model, x, sigmas, noise, callback, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        callback(i, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def dpmpp_sde(model, x, sigmas, noise, callback, eta=1.0, r=1 / 2):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = _sigma(lambda_s_1)
        # eps/v models: alpha = sigma * exp(lambda) = 1
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
        if eta > 0:
            x_2 = x_2 + noise(sigmas[i], sigma_s_1) * su
        denoised_2 = model(x_2, sigma_s_1)
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (-h_).exp() * x - (-h_).expm1() * denoised_d
        if eta > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * su
    return x


def dpmpp_2m(model, x, sigmas, noise, callback):
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _sde_exponential_step(x, denoised, sigma, sigma_next, h, eta):
    """The first-order exponential-integrator step the multistep SDE samplers share (h in log-sigma)."""
    return sigma_next / sigma * (-h * eta).exp() * x + (-h * (eta + 1)).expm1().neg() * denoised


def _sde_step_noise(noise, sigma, sigma_next, h, eta):
    """The fresh noise those samplers add after a step; nothing when eta is 0."""
    if eta <= 0:
        return 0
    return noise(sigma, sigma_next) * sigma_next * (-2 * h * eta).expm1().neg().sqrt()


def dpmpp_2m_sde(model, x, sigmas, noise, callback, eta=1.0, solver_type="midpoint"):
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (eta + 1)
            x = _sde_exponential_step(x, denoised, sigmas[i], sigmas[i + 1], h, eta)
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            x = x + _sde_step_noise(noise, sigmas[i], sigmas[i + 1], h, eta)
        old_denoised, h_last = denoised, h
    return x


def dpmpp_2m_sde_heun(model, x, sigmas, noise, callback):
    return dpmpp_2m_sde(model, x, sigmas, noise, callback, solver_type="heun")


def dpmpp_3m_sde(model, x, sigmas, noise, callback, eta=1.0):
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (eta + 1)
            x = _sde_exponential_step(x, denoised, sigmas[i], sigmas[i + 1], h, eta)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            x = x + _sde_step_noise(noise, sigmas[i], sigmas[i + 1], h, eta)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# -- DDPM and LCM: re-noise after each step ---------------------------------------------------------------

def ddpm(model, x, sigmas, noise, callback):
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        callback(i, denoised)
        eps = (x - denoised) / sigma
        x = x / torch.sqrt(1.0 + sigma ** 2.0)  # to the variance-preserving form
        alpha_cumprod, alpha_cumprod_prev = 1 / (sigma * sigma + 1), 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise(sigma, sigma_prev)
            mu = mu * torch.sqrt(1.0 + sigma_prev ** 2.0)
        x = mu
    return x


def lcm(model, x, sigmas, noise, callback):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


# -- linear multistep in sigma: iPNDM ------------------------------------------------------------------------

def ipndm(model, x, sigmas, noise, callback, max_order=4):
    buffer: list = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur)
        callback(i, denoised)
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d
        elif order == 2:
            x_next = x + (t_next - t_cur) * (3 * d - buffer[-1]) / 2
        elif order == 3:
            x_next = x + (t_next - t_cur) * (23 * d - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x_next = x + (t_next - t_cur) * (55 * d - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3]) / 24
        buffer = (buffer + [d])[-(max_order - 1):]
        x = x_next
    return x


def ipndm_v(model, x, sigmas, noise, callback, max_order=4):
    """iPNDM with coefficients for variable step sizes."""
    buffer: list = []
    t = sigmas
    for i in range(len(sigmas) - 1):
        t_cur, t_next = t[i], t[i + 1]
        denoised = model(x, t_cur)
        callback(i, denoised)
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d
        else:
            h_n, h_n_1 = t_next - t_cur, t_cur - t[i - 1]
            c1, c2 = (2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2
            if order == 2:
                x_next = x + h_n * (c1 * d + c2 * buffer[-1])
            else:
                h_n_2 = t[i - 1] - t[i - 2]
                temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
                if order == 3:
                    x_next = x + h_n * ((c1 + temp1) * d + (c2 - (1 + h_n_1 / h_n_2) * temp1) * buffer[-1]
                                        + temp1 * h_n_1 / h_n_2 * buffer[-2])
                else:
                    h_n_3 = t[i - 2] - t[i - 3]
                    temp2 = (((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n
                              / (6 * (h_n + h_n_1 + h_n_2)))
                             * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
                             / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3)))
                    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
                    k1 = c1 + temp1 + temp2
                    k2 = c2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2
                    k3 = temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2
                    k4 = -temp2 * ratio * h_n_1 / h_n_2
                    x_next = x + h_n * (k1 * d + k2 * buffer[-1] + k3 * buffer[-2] + k4 * buffer[-3])
        buffer = (buffer + [d])[-(max_order - 1):]
        x = x_next
    return x


def _deis_coefficients(sigmas, max_order, points=10000):
    """DEIS "tab" coefficients (arXiv 2204.13902): the exponential integrator's weights for the last
    derivatives, integrated numerically in the time of a VP-SDE fitted to EDM's sigma range."""
    eps_s, sigma_min, sigma_max = 1e-3, torch.tensor(0.002), torch.tensor(80.0)
    beta_d = 2 * (torch.log(sigma_min ** 2 + 1) / eps_s - torch.log(sigma_max ** 2 + 1)) / (eps_s - 1)
    beta_min = torch.log(sigma_max ** 2 + 1) - 0.5 * beta_d
    t_steps = ((beta_min ** 2 + 2 * beta_d * (sigmas.cpu() ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coefficients = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coefficients.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(float(t_cur), float(t_next), points)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
        integrand = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        previous = t_steps[[i - k for k in range(order)]]
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * (taus - previous[k]) / (previous[j] - previous[k])
            row.append(torch.sum(integrand * poly) * (t_next - t_cur) / points)
        coefficients.append(row)
    return coefficients


def deis(model, x, sigmas, noise, callback, max_order=3):
    coefficients = _deis_coefficients(sigmas, max_order)
    buffer: list = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur)
        callback(i, denoised)
        d = (x - denoised) / t_cur
        order = 1 if t_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (t_next - t_cur) * d
        else:
            c = coefficients[i]
            x_next = x + c[0] * d + sum(c[k] * buffer[-k] for k in range(1, order))
        buffer = (buffer + [d])[-(max_order - 1):]
        x = x_next
    return x


# -- RES multistep, gradient estimation, ER-SDE, SEEDS -----------------------------------------------------

def res_multistep(model, x, sigmas, noise, callback, eta=0.0, cfg_pp=False):
    """Second-order multistep exponential integrator (arXiv 2308.02157); eta > 0 is its ancestral form."""
    phi1 = lambda h: torch.expm1(h) / h  # noqa: E731
    phi2 = lambda h: (phi1(h) - 1.0) / h  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond if cfg_pp else denoised
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        callback(i, denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = _t(sigmas[i]), _t(old_sigma_down), _t(sigma_down), _t(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = _sigma(h) * x + h * (b1 * uncond + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        old_denoised, old_sigma_down = uncond, sigma_down
    return x


def gradient_estimation(model, x, sigmas, noise, callback, ge_gamma=2.0, cfg_pp=False):
    """Euler plus a correction from the change of direction (openreview o2ND9v0CeK)."""
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], model.uncond if cfg_pp else denoised)
        callback(i, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def er_sde(model, x, sigmas, noise, callback, max_stage=3):
    """Extended reverse-time SDE solver, VP ER-SDE-Solver-3 (arXiv 2309.06169)."""
    def scaler(v):
        return v * ((v ** 0.3).exp() + 10.0)

    points = 200.0
    point_index = torch.arange(0, points, dtype=torch.float32)
    er_lambdas = sigmas  # sigma / alpha with alpha = 1
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = er_lambdas[i], er_lambdas[i + 1]
            r = scaler(lam_t) / scaler(lam_s)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / points
                positions = lam_t + point_index * step
                scaled = scaler(positions)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (lam_s - er_lambdas[i - 1])
                x = x + (dt + s * scaler(lam_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((positions - lam_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lam_s - er_lambdas[i - 2]) / 2)
                    x = x + ((dt ** 2) / 2 + s_u * scaler(lam_t)) * denoised_u
                old_denoised_d = denoised_d
            x = x + noise(sigmas[i], sigmas[i + 1]) * (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


def _phi_1(h):
    return torch.expm1(h)


def _phi_2(h):
    return (torch.expm1(h) - h) / h


def seeds_2(model, x, sigmas, noise, callback, eta=1.0, r=0.5, solver_type="phi_1"):
    """SEEDS-2, stochastic explicit exponential derivative-free solver, stage 2 (arXiv 2305.14267)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s_1 = _sigma(torch.lerp(lambda_s, lambda_t, r))
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - _phi_1(-r * h_eta) * denoised
        if eta > 0:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1
        denoised_2 = model(x_2, sigma_s_1)
        if solver_type == "phi_1":
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - _phi_1(-h_eta) * torch.lerp(denoised, denoised_2, 1 / (2 * r))
        else:
            b2 = _phi_2(-h_eta) / r
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - ((_phi_1(-h_eta) - b2) * denoised + b2 * denoised_2)
        if eta > 0:
            segment = (r - 1) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1]
    return x


def seeds_3(model, x, sigmas, noise, callback, eta=1.0, r_1=1. / 3, r_2=2. / 3):
    """SEEDS-3 (arXiv 2305.14267)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s_1, sigma_s_2 = _sigma(torch.lerp(lambda_s, lambda_t, r_1)), _sigma(torch.lerp(lambda_s, lambda_t, r_2))
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - _phi_1(-r_1 * h_eta) * denoised
        if eta > 0:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1
        denoised_2 = model(x_2, sigma_s_1)
        a3_2 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
        a3_1 = _phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - (a3_1 * denoised + a3_2 * denoised_2)
        if eta > 0:
            segment = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2
        denoised_3 = model(x_3, sigma_s_2)
        b3 = _phi_2(-h_eta) / r_2
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - ((_phi_1(-h_eta) - b3) * denoised + b3 * denoised_3)
        if eta > 0:
            segment = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s_2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1]
    return x


# -- CFG++: step along the unguided prediction (arXiv 2406.08070) ---------------------------------------------

def euler_ancestral_cfg_pp(model, x, sigmas, noise, callback, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback(i, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], model.uncond)
            sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            x = denoised + sigma_down * d
            if eta > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def euler_cfg_pp(model, x, sigmas, noise, callback):
    return euler_ancestral_cfg_pp(model, x, sigmas, noise, callback, eta=0.0)


def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise, callback, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond
        guidance = denoised - uncond
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        callback(i, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], uncond) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * uncond
            model(x_2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * model.uncond
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        x = x + guidance
    return x


def dpmpp_2m_cfg_pp(model, x, sigmas, noise, callback):
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond
        callback(i, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - _t(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


# -- A1111's Restart (arXiv 2306.14878) ----------------------------------------------------------------------

def _karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def restart(model, x, sigmas, noise, callback):
    """Heun steps down a Karras schedule; from 20 steps on, part of the steps go back up from sigma 0.1 to
    2 (re-noised) and down again, as AUTOMATIC1111's restart_sampler chooses them."""
    steps = len(sigmas) - 1
    restarts: dict = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = _karras(steps - restart_steps * restart_times, float(sigmas[-2]), float(sigmas[0]))
        restarts = {0.1: [restart_steps + 1, restart_times, 2]}
    restarts = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restarts.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts:
            restart_steps, restart_times, restart_max = restarts[i + 1]
            max_index = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_index < i + 1:
                back = _karras(restart_steps, float(sigmas[i + 1]), float(sigmas[max_index]))[:-1]
                pairs.extend(list(zip(back[:-1], back[1:])) * restart_times)
    last_sigma = None
    for i, (old_sigma, new_sigma) in enumerate(pairs):
        if last_sigma is not None and last_sigma < old_sigma:
            x = x + noise(old_sigma, new_sigma) * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = model(x, old_sigma)
        d = to_d(x, old_sigma, denoised)
        callback(i, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            x = x + (d + to_d(x_2, new_sigma, model(x_2, new_sigma))) / 2 * dt
        last_sigma = new_sigma
    return x


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(euler),
    "euler_cfg_pp": Sampler(euler_cfg_pp, cfg_pp=True),
    "euler_ancestral": Sampler(euler_ancestral, "randn"),
    "euler_ancestral_cfg_pp": Sampler(euler_ancestral_cfg_pp, "randn", cfg_pp=True),
    "heun": Sampler(heun),
    "heunpp2": Sampler(heunpp2),
    "exp_heun_2_x0": Sampler(lambda m, x, s, n, c: seeds_2(m, x, s, n, c, eta=0.0, r=1.0, solver_type="phi_2")),
    "exp_heun_2_x0_sde": Sampler(lambda m, x, s, n, c: seeds_2(m, x, s, n, c, r=1.0, solver_type="phi_2"), "randn"),
    "dpm_2": Sampler(dpm_2),
    "dpm_2_ancestral": Sampler(dpm_2_ancestral, "randn"),
    "lms": Sampler(lms),
    "dpm_fast": Sampler(dpm_fast),
    "dpm_adaptive": Sampler(dpm_adaptive),
    "dpmpp_2s_ancestral": Sampler(dpmpp_2s_ancestral, "randn"),
    "dpmpp_2s_ancestral_cfg_pp": Sampler(dpmpp_2s_ancestral_cfg_pp, "randn", cfg_pp=True),
    "dpmpp_sde": Sampler(dpmpp_sde, "brownian"),
    "dpmpp_sde_gpu": Sampler(dpmpp_sde, "brownian_gpu"),
    "dpmpp_2m": Sampler(dpmpp_2m),
    "dpmpp_2m_cfg_pp": Sampler(dpmpp_2m_cfg_pp, cfg_pp=True),
    "dpmpp_2m_sde": Sampler(dpmpp_2m_sde, "brownian"),
    "dpmpp_2m_sde_gpu": Sampler(dpmpp_2m_sde, "brownian_gpu"),
    "dpmpp_2m_sde_heun": Sampler(dpmpp_2m_sde_heun, "brownian"),
    "dpmpp_2m_sde_heun_gpu": Sampler(dpmpp_2m_sde_heun, "brownian_gpu"),
    "dpmpp_3m_sde": Sampler(dpmpp_3m_sde, "brownian"),
    "dpmpp_3m_sde_gpu": Sampler(dpmpp_3m_sde, "brownian_gpu"),
    "ddpm": Sampler(ddpm, "randn"),
    "lcm": Sampler(lcm, "randn"),
    "ipndm": Sampler(ipndm),
    "ipndm_v": Sampler(ipndm_v),
    "deis": Sampler(deis),
    "res_multistep": Sampler(res_multistep),
    "res_multistep_cfg_pp": Sampler(lambda m, x, s, n, c: res_multistep(m, x, s, n, c, cfg_pp=True), cfg_pp=True),
    "res_multistep_ancestral": Sampler(lambda m, x, s, n, c: res_multistep(m, x, s, n, c, eta=1.0), "randn"),
    "res_multistep_ancestral_cfg_pp": Sampler(lambda m, x, s, n, c: res_multistep(m, x, s, n, c, eta=1.0, cfg_pp=True),
                                              "randn", cfg_pp=True),
    "gradient_estimation": Sampler(gradient_estimation),
    "gradient_estimation_cfg_pp": Sampler(lambda m, x, s, n, c: gradient_estimation(m, x, s, n, c, cfg_pp=True),
                                          cfg_pp=True),
    "er_sde": Sampler(er_sde, "randn"),
    "seeds_2": Sampler(seeds_2, "randn"),
    "seeds_3": Sampler(seeds_3, "randn"),
    "ddim": Sampler(euler),  # DDIM with eta 0 is Euler's method in sigma; ComfyUI runs it as euler
    "restart": Sampler(restart, "randn"),
}
