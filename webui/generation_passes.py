"""What a generation adds to its workflow after the first sampler: A1111's hires fix, a refiner that
takes over at a fraction of the steps, and a VAE file in place of the checkpoint's own VAE.

Each is a change to a workflow built from workflows/*.json, made with core nodes, so the saved
workflow shows what ran and its infotext (read off the workflow, nodes/formats/png_metadata.py)
names them as A1111 does:

  hires fix   sampler 3 -> LatentUpscaleBy (a "Latent" upscaler) or VAEDecode -> ImageScaleBy -> VAEEncode
              (a pixel one; LatentUpscale / ImageScale for a "resize to"; an upscale model runs
              UpscaleModelLoader 20 -> ImageUpscaleWithModel 21 before a Lanczos ImageScale to the hires
              size, as A1111) -> KSampler 17 at the hires
              steps and denoising strength -> the decoder. workflows/txt2img_hires.json is what it builds.
  refiner     a KSampler becomes a KSamplerAdvanced pair: the base model from its first step to the
              switch, handing over its leftover noise, then the refiner (CLIPTextEncodeSDXLRefiner
              conditioning, no noise added) to the end. With hires fix it refines the hires pass, A1111's
              default. workflows/txt2img_refiner.json is what it builds.
  VAE         a VAELoader feeds every VAE input that took a checkpoint's VAE.
"""
from __future__ import annotations

import copy
import math

from ..nodes.formats import embedding_names as embeddings
from ..nodes.formats.png_metadata import HIRES_UPSCALERS
from .parameters import hires_size
from .templates import VARIATION_SEED

# Node ids of what the passes add.
HIRES_UPSCALE, HIRES_DECODE, HIRES_ENCODE, HIRES_SAMPLER = "14", "15", "16", "17"
HIRES_POSITIVE, HIRES_NEGATIVE = "18", "19"
HIRES_MODEL_LOADER, HIRES_MODEL_UPSCALE = "24", "25"  # (20-23: templates.py's clip skip, resize and mask)
REFINER_LOADER, REFINER_POSITIVE, REFINER_NEGATIVE, REFINER_SAMPLER, REFINER_CLIP_SKIP = "30", "31", "32", "33", "34"
VAE_LOADER = "40"
REFINER_SCORES = (6.0, 2.5)  # A1111's default aesthetic scores for the positive and negative prompt


# -- building --------------------------------------------------------------------------------------------

def add_passes(workflow: dict, params, samplers: list[str], hires: bool = False, decoder: str = "8") -> None:
    """Add what `params` (resolved) asks for after the first pass: hires fix (txt2img: sampler
    samplers[0], decoded by `decoder`), the refiner on each of `samplers` (or on the hires pass), the VAE
    file, and A1111's variation seed before every sampler that adds noise."""
    size = (params.width, params.height)
    if hires and params.enable_hr:
        add_hires_pass(workflow, params, samplers[0], decoder)
        samplers = [HIRES_SAMPLER]
        size = hires_size(params.width, params.height, params.hr_scale, params.hr_resize_x, params.hr_resize_y)
    if params.refiner_checkpoint:
        add_refiner(workflow, params, samplers, size)
    if params.vae:
        use_vae(workflow, params.vae)
    add_variation_seed(workflow, params)


def add_variation_seed(workflow: dict, params) -> None:
    """A1111's variation seed and seed resize: a VariationSeed node on the latent of every sampler that
    adds noise (A1111 gives its hires pass the same variation)."""
    resize = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    if not params.subseed_strength and not resize:
        return
    for node_id, node in list(workflow.items()):
        inputs = node["inputs"]
        if node["class_type"] not in ("KSampler", "KSamplerAdvanced") or inputs.get("add_noise") == "disable":
            continue
        variation_id = f"{VARIATION_SEED}_{node_id}"
        workflow[variation_id] = _node("VariationSeed", "Variation seed", samples=inputs["latent_image"],
                                       subseed=params.subseed, subseed_strength=params.subseed_strength,
                                       seed_resize_from_w=params.seed_resize_from_w if resize else 0,
                                       seed_resize_from_h=params.seed_resize_from_h if resize else 0)
        inputs["latent_image"] = [variation_id, 0]


def add_hires_pass(workflow: dict, params, sampler: str = "3", decoder: str = "8") -> None:
    """A1111's hires fix after `sampler`: upscale its latent (or its decoded image) and sample again
    at params.denoising_strength; `decoder` then decodes the second pass."""
    first = workflow[sampler]["inputs"]
    model = params.hr_upscaler not in HIRES_UPSCALERS  # an upscale model's file (parameters.resolve found it)
    space, method = ("pixel", "lanczos") if model else HIRES_UPSCALERS[params.hr_upscaler]
    resize = params.hr_resize_x or params.hr_resize_y
    if resize:
        scaling = {"width": params.hr_resize_x, "height": params.hr_resize_y,
                   "crop": "center" if params.hr_resize_x and params.hr_resize_y else "disabled"}
    else:
        scaling = {"scale_by": params.hr_scale}
    if space == "latent":
        workflow[HIRES_UPSCALE] = _node("LatentUpscale" if resize else "LatentUpscaleBy", "Hires fix upscale",
                                        samples=[sampler, 0], upscale_method=method, **scaling)
        upscaled = [HIRES_UPSCALE, 0]
    else:
        vae = workflow[decoder]["inputs"]["vae"]
        workflow[HIRES_DECODE] = _node("VAEDecode", "Hires fix: first pass image", samples=[sampler, 0], vae=vae)
        image = [HIRES_DECODE, 0]
        if model:  # as A1111: the model's own upscale, then Lanczos to the hires size exactly
            workflow[HIRES_MODEL_LOADER] = _node("UpscaleModelLoader", "Hires fix upscale model",
                                                 model_name=params.hr_upscaler)
            workflow[HIRES_MODEL_UPSCALE] = _node("ImageUpscaleWithModel", "Hires fix model upscale",
                                                  upscale_model=[HIRES_MODEL_LOADER, 0], image=image)
            image = [HIRES_MODEL_UPSCALE, 0]
            width, height = hires_size(params.width, params.height, params.hr_scale, params.hr_resize_x,
                                       params.hr_resize_y)
            resize, scaling = True, {"width": width, "height": height,
                                     "crop": "center" if params.hr_resize_x and params.hr_resize_y else "disabled"}
        workflow[HIRES_UPSCALE] = _node("ImageScale" if resize else "ImageScaleBy", "Hires fix upscale",
                                        image=image, upscale_method=method, **scaling)
        workflow[HIRES_ENCODE] = _node("VAEEncode", "Hires fix: upscaled latent", pixels=[HIRES_UPSCALE, 0], vae=vae)
        upscaled = [HIRES_ENCODE, 0]
    second = {**copy.deepcopy(first), "latent_image": upscaled, "denoise": params.denoising_strength,
              "steps": params.hr_second_pass_steps or first["steps"]}
    if params.hr_sampler_name:  # resolved with its scheduler into ComfyUI names
        second["sampler_name"], second["scheduler"] = params.hr_sampler_name, params.hr_scheduler
    embedding_names = embeddings.list_names() if params.hr_prompt or params.hr_negative_prompt else []
    for text, link, node_id in ((params.hr_prompt, "positive", HIRES_POSITIVE),
                                (params.hr_negative_prompt, "negative", HIRES_NEGATIVE)):
        encoder = workflow[first[link][0]]
        text = embeddings.mark_names(text, embedding_names) if text else text  # as the first pass's prompts
        if text and text != encoder["inputs"].get("text"):  # A1111: an empty hires prompt is the prompt
            workflow[node_id] = copy.deepcopy(encoder)
            workflow[node_id]["inputs"]["text"] = text
            workflow[node_id]["_meta"] = {"title": f"Hires fix {link} prompt"}
            second[link] = [node_id, 0]
    workflow[HIRES_SAMPLER] = {"class_type": workflow[sampler]["class_type"], "inputs": second,
                               "_meta": {"title": "Hires fix sampler"}}
    workflow[decoder]["inputs"]["samples"] = [HIRES_SAMPLER, 0]


def add_refiner(workflow: dict, params, samplers: list[str], size: tuple[int, int]) -> None:
    """Hand each of `samplers` (KSampler nodes) over to params.refiner_checkpoint at
    params.refiner_switch_at of the steps it runs. A switch at the end leaves the workflow as it was."""
    first = workflow[samplers[0]]["inputs"]
    prompts = [workflow[first[link][0]]["inputs"].get("text", "") for link in ("positive", "negative")]
    handed_over = [sampler for sampler in samplers if _split(workflow, sampler, params.refiner_switch_at)]
    if not handed_over:
        return
    workflow[REFINER_LOADER] = _node("CheckpointLoaderSimple", "Refiner checkpoint", ckpt_name=params.refiner_checkpoint)
    clip = [REFINER_LOADER, 1]
    if params.clip_skip > 1:
        workflow[REFINER_CLIP_SKIP] = _node("CLIPSetLastLayer", None, clip=clip, stop_at_clip_layer=-params.clip_skip)
        clip = [REFINER_CLIP_SKIP, 0]
    for node_id, text, score, title in ((REFINER_POSITIVE, prompts[0], REFINER_SCORES[0], "Refiner positive prompt"),
                                        (REFINER_NEGATIVE, prompts[1], REFINER_SCORES[1], "Refiner negative prompt")):
        workflow[node_id] = _node("CLIPTextEncodeSDXLRefiner", title, ascore=score, width=size[0], height=size[1],
                                  text=text, clip=clip)


def _split(workflow: dict, sampler: str, switch_at: float) -> bool:
    """Turn KSampler `sampler` into the base KSamplerAdvanced up to the switch step and a refiner
    KSamplerAdvanced after it, which its consumers now read; False when the switch is at the end."""
    inputs = workflow[sampler]["inputs"]
    steps = inputs["steps"]
    start = steps - min(int(steps * inputs.get("denoise", 1.0)), steps)  # as the sampler counts img2img steps
    switch = start + max(1, math.ceil((steps - start) * switch_at - 1e-9))  # A1111 switches once the fraction is done
    if switch >= steps:
        return False
    shared = {key: inputs[key] for key in ("steps", "cfg", "sampler_name", "scheduler", "noise_rule",
                                             "eta_noise_seed_delta") if key in inputs}
    workflow[sampler] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": inputs["model"], "add_noise": "enable", "noise_seed": inputs["seed"], **shared,
        "positive": inputs["positive"], "negative": inputs["negative"], "latent_image": inputs["latent_image"],
        "start_at_step": start, "end_at_step": switch, "return_with_leftover_noise": "enable"},
        **({"_meta": workflow[sampler]["_meta"]} if "_meta" in workflow[sampler] else {})}
    refiner_id = REFINER_SAMPLER + sampler[len(sampler.split("_")[0]):]  # "3_1" -> "33_1", as the batch branches
    _relink(workflow, [sampler, 0], [refiner_id, 0])
    workflow[refiner_id] = _node("KSamplerAdvanced", "Refiner sampler", model=[REFINER_LOADER, 0], add_noise="disable",
                                 noise_seed=inputs["seed"], **shared, positive=[REFINER_POSITIVE, 0],
                                 negative=[REFINER_NEGATIVE, 0], latent_image=[sampler, 0], start_at_step=switch,
                                 end_at_step=10000, return_with_leftover_noise="disable")
    return True


def use_vae(workflow: dict, vae_name: str) -> None:
    """Decode and encode with the VAE file `vae_name` instead of any checkpoint's VAE."""
    loaders = [node_id for node_id, node in workflow.items() if node["class_type"] == "CheckpointLoaderSimple"]
    workflow[VAE_LOADER] = _node("VAELoader", "VAE", vae_name=vae_name)
    for loader in loaders:
        _relink(workflow, [loader, 2], [VAE_LOADER, 0])


def _relink(workflow: dict, old: list, new: list) -> None:
    for node in workflow.values():
        for name, value in node["inputs"].items():
            if value == old:
                node["inputs"][name] = list(new)


def _node(class_type: str, title: str | None, **inputs) -> dict:
    node: dict = {"class_type": class_type, "inputs": inputs}
    if title:
        node["_meta"] = {"title": title}
    return node
