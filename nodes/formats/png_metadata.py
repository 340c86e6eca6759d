"""PNG metadata as ComfyUI and AUTOMATIC1111 write it, and read back. Pure Python: no torch, no PIL.

ComfyUI stores the API workflow as the `prompt` text chunk and the UI workflow as `workflow`; A1111
stores its "infotext" as `parameters`. We write all three, so an image opens in either program.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Iterator

from ..graph import is_link
from .sampler_names import a1111_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A workflow is rarely over a few MB; text chunks inflating past this, all together, are hostile (a
# decompression bomb), not a workflow.
MAX_TEXT_BYTES = 8 * 1024 * 1024


class PngTextTooLarge(ValueError):
    """A PNG whose text chunks hold (or inflate to) more than MAX_TEXT_BYTES in all."""

# -- A1111 infotext ------------------------------------------------------------------------------------

# The parameter-line pattern of A1111's modules/infotext_utils.py.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# What A1111's parser fills in for keys an infotext leaves out (the ones that don't depend on settings).
A1111_PARSE_DEFAULTS = {
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
    "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
    "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0,
    "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}


def quote(value) -> str:
    """A1111's quoting: JSON-encode a value holding a comma, colon or newline, else leave it bare."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """A1111's infotext: prompt, `Negative prompt: ...` (left out when empty), then `Key: value, ...`.
    Keys keep the order given; None values are left out; a key equal to its value is written alone."""
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def parse_infotext(text: str, defaults: bool = True) -> dict:
    """A1111's parse_generation_parameters: {"Prompt", "Negative prompt", key: str, ...}.

    `WxH` values split into `Key-1`/`Key-2`. With `defaults`, keys A1111 treats as implied when absent
    (Clip skip 1, Schedule type Automatic, ...) are filled in as A1111 does."""
    res: dict = {}
    prompt, negative = "", ""
    done_with_prompt = False
    *lines, lastline = text.strip().split("\n")
    if len(_RE_PARAM.findall(lastline)) < 3:  # no parameter line: it is part of the prompt
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative

    for key, value in _RE_PARAM.findall(lastline):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        size = _RE_IMAGESIZE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value

    if not defaults:
        return res
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    for key, value in A1111_PARSE_DEFAULTS.items():
        res.setdefault(key, value)
    if res["FP8 weight"] != "Disable":
        res.setdefault("Cache FP16 weight for LoRA", False)
    _restore_old_hires_fix(res)
    return res


def _restore_old_hires_fix(res: dict) -> None:
    """Infotexts from before A1111 1.0 give the first pass as `First pass size`; turn it into Size + Hires resize."""
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(first_w), int(first_h)
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    if first_w == 0 or first_h == 0:  # A1111's old automatic first pass: about 512x512 pixels, multiples of 64
        scale = (512 * 512 / (width * height)) ** 0.5
        first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


# -- infotext from a ComfyUI API workflow ----------------------------------------------------------------

def inkwash_version() -> str:
    try:
        return "inkwash-" + importlib_metadata.version("inkwash")
    except importlib_metadata.PackageNotFoundError:
        return "inkwash"


def _number(value) -> str:
    """7.0 -> "7", 7.5 -> "7.5", as A1111's UI writes CFG scale."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


class _Graph:
    """Read-only walks over an API workflow `{id: {"class_type", "inputs"}}`."""

    def __init__(self, prompt: dict):
        self.prompt = prompt

    def node(self, link) -> tuple[str, dict, int] | None:
        if not is_link(link):
            return None
        node = self.prompt.get(str(link[0]))
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            return None
        return node.get("class_type", ""), node["inputs"], link[1]

    def literal(self, value, names: tuple[str, ...] = ()):
        """A widget value, following a link to a primitive node's `names` or `value` (a "Seed" node, say)."""
        for _ in range(16):
            if not is_link(value):
                return value
            found = self.node(value)
            if found is None:
                return None
            _, inputs, _ = found
            value = next((inputs[n] for n in (*names, "value") if n in inputs), None)
        return None

    def follow(self, link, stop: Callable[[str, dict], bool], through: tuple[str, ...]):
        """From `link`, go upstream through the first input named in `through` until `stop(class, inputs)`."""
        for _ in range(256):  # a workflow has fewer hops than this; guards against cycles
            found = self.node(link)
            if found is None:
                return None
            class_type, inputs, index = found
            if stop(class_type, inputs):
                return class_type, inputs, index
            link = next((inputs[n] for n in through if is_link(inputs.get(n))), None)
        return None

    def text(self, link) -> str | None:
        """The prompt text behind a CONDITIONING link, through ControlNet-apply and similar nodes."""
        for _ in range(256):
            found = self.node(link)
            if found is None:
                return None
            _, inputs, index = found
            for name in ("text", "text_g"):
                if name in inputs:
                    text = self.literal(inputs[name], names=("text", "string"))
                    return text if isinstance(text, str) else None
            # Nodes with positive+negative in and out (ControlNetApplyAdvanced) keep each on its own side.
            if is_link(inputs.get("positive")) and is_link(inputs.get("negative")):
                link = inputs["positive" if index == 0 else "negative"]
                continue
            link = next((inputs[n] for n in ("conditioning", "conditioning_1", "conditioning_to", "cond")
                         if is_link(inputs.get(n))), None)
        return None


def _is_sampler(class_type: str, inputs: dict) -> bool:
    return "sampler_name" in inputs and "steps" in inputs and "positive" in inputs


def infotext_from_workflow(prompt: dict, output_node_id: str, *, size: tuple[int, int] | None = None,
                           batch_index: int = 0, model_hash: Callable[[str], str | None] | None = None,
                           version: str | None = None,
                           vae_hash: Callable[[str], str | None] | None = None,
                           lora_hash: Callable[[str], str | None] | None = None,
                           ti_hash: Callable[[str], str | None] | None = None) -> str | None:
    """The A1111 infotext of the image an output node saves, read off the API workflow; None when no
    sampler feeds it. `size` is the saved image's (width, height); `batch_index` offsets the seed, as
    each image of a batch is drawn from seed + index; `model_hash(ckpt_name)` gives A1111's short hash,
    `vae_hash(vae_name)` a VAE file's, `lora_hash` a LoRA's and `ti_hash(name)` an embedding's that the
    prompts reference (`embedding:NAME`). A hires-fix pass or a refiner after the first sampler is
    written as A1111 writes them, with the first pass's settings and size."""
    graph = _Graph(prompt)
    out = prompt.get(str(output_node_id))
    if not isinstance(out, dict):
        return None
    image_link = (out.get("inputs") or {}).get("images")
    sampler = graph.follow(image_link, _is_sampler,
                           through=("samples", "images", "image", "pixels", "latent_image", "latent"))
    if sampler is None:
        return None
    inputs, hires_inputs, passes = _passes(graph, sampler[1], model_hash)

    seed = graph.literal(inputs.get("noise_seed", inputs.get("seed")), names=("seed", "noise_seed"))
    steps = graph.literal(inputs.get("steps"), names=("steps",))
    steps = steps if isinstance(steps, int) else None
    cfg = graph.literal(inputs.get("cfg"), names=("cfg",))
    sampler_name = graph.literal(inputs.get("sampler_name"), names=("sampler_name",))
    scheduler = graph.literal(inputs.get("scheduler"), names=("scheduler",))
    denoise = _denoise(graph, hires_inputs or inputs)

    if size is None or hires_inputs is not None:  # A1111's Size is the first pass's
        empty = graph.follow(inputs.get("latent_image"), lambda c, i: "width" in i and "height" in i,
                             through=("samples", "latent_image", "latent"))
        if empty is not None:
            size = (graph.literal(empty[1]["width"]), graph.literal(empty[1]["height"]))

    loader = graph.follow(inputs.get("model"), lambda c, i: "ckpt_name" in i, through=("model",))
    ckpt_name = graph.literal(loader[1]["ckpt_name"]) if loader else None
    ckpt_name = ckpt_name if isinstance(ckpt_name, str) else None

    positive = graph.text(inputs.get("positive")) or ""
    negative = graph.text(inputs.get("negative")) or ""
    clip_skip = _clip_skip(graph, inputs.get("positive"))
    loras = _loras(graph, inputs.get("model"))
    positive = _with_lora_tags(positive, loras)

    a1111_sampler, a1111_schedule = a1111_names(sampler_name, scheduler)
    params = {
        "Steps": steps,
        "Sampler": a1111_sampler,
        "Schedule type": a1111_schedule,
        "CFG scale": _number(cfg) if isinstance(cfg, (int, float)) else None,
        "Seed": seed + batch_index if isinstance(seed, int) else None,
        "Size": f"{size[0]}x{size[1]}" if size and None not in size else None,
        "Model hash": model_hash(ckpt_name) if model_hash and ckpt_name else None,
        "Model": os.path.splitext(os.path.basename(ckpt_name))[0] if ckpt_name else None,
        **_vae_params(graph, image_link, vae_hash),
        **_variation_params(graph, inputs),
        "Denoising strength": _number(round(denoise, 4)) if isinstance(denoise, (int, float)) and denoise < 1 else None,
        "Clip skip": clip_skip if clip_skip and clip_skip > 1 else None,
        **_random_numbers(graph, inputs),
        **passes,
        "Lora hashes": _lora_hashes(loras, lora_hash),
        "TI hashes": _ti_hashes(f"{positive}\n{negative}", ti_hash),
        "Version": version or inkwash_version(),
    }
    return format_infotext(positive, negative, params)


def _variation_params(graph: _Graph, inputs: dict) -> dict:
    """A1111's "Variation seed", "Variation seed strength" and "Seed resize from" of a sampler whose latent
    comes through a VariationSeed node."""
    found = graph.follow(inputs.get("latent_image"), lambda c, i: c == "VariationSeed", through=("samples",))
    if found is None:
        return {}
    names = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
    subseed, strength, width, height = (graph.literal(found[1].get(n), names=(n,)) for n in names)
    varied = isinstance(strength, (int, float)) and strength > 0
    resized = isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
    return {"Variation seed": subseed if varied else None,
            "Variation seed strength": _number(strength) if varied else None,
            "Seed resize from": f"{width}x{height}" if resized else None}


# A sampler's A1111 noise rule -> the "RNG" A1111 writes for it (its default GPU source goes unwritten; NV
# is written, as it reproduces these numbers on any A1111 install, not only on NVIDIA cards).
_RNG_OF_RULE = {"a1111": "CPU", "a1111_nv": "NV"}


def _random_numbers(graph: _Graph, inputs: dict) -> dict:
    """A1111's "ENSD" and "RNG" of a sampler under an A1111 noise rule; none under ComfyUI's, which A1111
    cannot reproduce."""
    rule = graph.literal(inputs.get("noise_rule"), names=("noise_rule",))
    if rule not in _RNG_OF_RULE:
        return {}
    delta = graph.literal(inputs.get("eta_noise_seed_delta", 0), names=("eta_noise_seed_delta",))
    return {"ENSD": delta if isinstance(delta, int) and delta > 0 else None, "RNG": _RNG_OF_RULE[rule]}


def _denoise(graph: _Graph, inputs: dict):
    denoise = graph.literal(inputs.get("denoise", 1.0), names=("denoise",))
    steps = graph.literal(inputs.get("steps"), names=("steps",))
    start = inputs.get("start_at_step")
    if isinstance(start, int) and start > 0 and isinstance(steps, int) and steps:
        denoise = max(0.0, 1.0 - start / steps)  # KSamplerAdvanced resuming part-way is img2img strength
    return denoise


def _vae_params(graph: _Graph, image_link, vae_hash) -> dict:
    """A1111's "VAE hash" and "VAE" when the image was decoded with a VAE file (VAELoader), not the
    checkpoint's own."""
    decoder = graph.follow(image_link, lambda c, i: is_link(i.get("vae")) and "samples" in i,
                           through=("images", "image", "pixels"))
    loader = graph.node(decoder[1]["vae"]) if decoder else None
    name = graph.literal(loader[1].get("vae_name")) if loader else None
    if not isinstance(name, str):
        return {}
    return {"VAE hash": vae_hash(name) if vae_hash else None, "VAE": os.path.basename(name)}


# A1111's hires-fix upscalers: name -> (where the resize happens, ComfyUI upscale_method). A1111's "None"
# is a plain Lanczos resize, as "Lanczos" is; the first name of a pair is the one written back.
HIRES_UPSCALERS = {
    "Latent": ("latent", "bilinear"), "Latent (bicubic)": ("latent", "bicubic"),
    "Latent (nearest-exact)": ("latent", "nearest-exact"),
    "Lanczos": ("pixel", "lanczos"), "None": ("pixel", "lanczos"), "Nearest": ("pixel", "nearest-exact"),
}
_PASS_LINKS = ("samples", "pixels", "image", "images", "latent_image", "latent")


def hires_upscaler_name(space: str, method) -> str:
    """A1111's name of a hires upscale done in `space` ("latent" or "pixel") with `method`."""
    for name, found in HIRES_UPSCALERS.items():
        if found == (space, method):
            return name
    return f"Latent ({method})" if space == "latent" else str(method)


def _previous_pass(graph: _Graph, inputs: dict) -> tuple[dict, list[dict]] | None:
    """(inputs of the sampler this sampler's latent was made from, the nodes in between, nearest
    first); None when it starts from an empty latent or an encoded image file."""
    between: list[dict] = []
    link = inputs.get("latent_image")
    for _ in range(256):
        found = graph.node(link)
        if found is None:
            return None
        class_type, node_inputs, _ = found
        if _is_sampler(class_type, node_inputs):
            return node_inputs, between
        between.append(node_inputs)
        link = next((node_inputs[n] for n in _PASS_LINKS if is_link(node_inputs.get(n))), None)
    return None


def _passes(graph: _Graph, inputs: dict, model_hash) -> tuple[dict, dict | None, dict]:
    """(the first pass's sampler inputs, the hires pass's or None, A1111's hires and refiner
    parameters) for the sampler that made an image. A refiner takes over a sampler's leftover noise
    without adding noise; a hires pass samples an upscaled earlier result again."""
    refiner: dict = {}
    previous = _previous_pass(graph, inputs)
    if previous and not previous[1] and graph.literal(inputs.get("add_noise")) == "disable" \
            and graph.literal(previous[0].get("return_with_leftover_noise")) == "enable":
        refiner = _refiner_params(graph, previous[0], inputs, model_hash)
        inputs, previous = previous[0], _previous_pass(graph, previous[0])
    resize = next((i for i in previous[1] if "upscale_method" in i), None) if previous else None
    if resize is None:
        return inputs, None, refiner
    first = previous[0]
    return first, inputs, {**_hires_params(graph, first, inputs, previous[1], resize), **refiner}


def _refiner_params(graph: _Graph, base: dict, refiner: dict, model_hash) -> dict:
    steps = graph.literal(base.get("steps"))
    start, switch = graph.literal(base.get("start_at_step", 0)), graph.literal(refiner.get("start_at_step"))
    loader = graph.follow(refiner.get("model"), lambda c, i: "ckpt_name" in i, through=("model",))
    name = graph.literal(loader[1]["ckpt_name"]) if loader else None
    if not all(isinstance(v, int) for v in (steps, start, switch)) or steps <= start or not isinstance(name, str):
        return {}
    short = model_hash(name) if model_hash else None
    title = os.path.splitext(os.path.basename(name))[0]
    return {"Refiner": f"{title} [{short}]" if short else title,
            "Refiner switch at": _number(round(min(1.0, (switch - start) / (steps - start)), 4))}


def _hires_params(graph: _Graph, first: dict, hires: dict, between: list[dict], resize: dict) -> dict:
    """A1111's "Hires ..." parameters, in A1111's order."""
    params: dict = {}
    names = [a1111_names(graph.literal(i.get("sampler_name")), graph.literal(i.get("scheduler")))
             for i in (first, hires)]
    if names[1][0] != names[0][0]:
        params["Hires sampler"] = names[1][0]
    for key, link in (("Hires prompt", "positive"), ("Hires negative prompt", "negative")):
        text = graph.text(hires.get(link))
        if text and text != graph.text(first.get(link)):
            params[key] = text
    if names[1][1] != names[0][1]:
        params["Hires schedule type"] = names[1][1]
    scale = graph.literal(resize.get("scale_by"))
    if isinstance(scale, (int, float)):
        params["Hires upscale"] = _number(scale)
    else:
        params["Hires resize"] = f"{graph.literal(resize.get('width'))}x{graph.literal(resize.get('height'))}"
    steps = graph.literal(hires.get("steps"))
    if steps != graph.literal(first.get("steps")):
        params["Hires steps"] = steps
    decoded = any(is_link(i.get("vae")) and "samples" in i for i in between)  # VAEDecode: a pixel upscale
    params["Hires upscaler"] = _upscale_model_name(graph, between) or hires_upscaler_name(
        "pixel" if decoded else "latent", graph.literal(resize.get("upscale_method")))
    return params


def _upscale_model_name(graph: _Graph, between: list[dict]) -> str | None:
    """A1111's name (the file name without extension) of an upscale model run between two passes."""
    for inputs in between:
        loader = graph.node(inputs.get("upscale_model")) if is_link(inputs.get("upscale_model")) else None
        name = graph.literal(loader[1].get("model_name")) if loader else None
        if isinstance(name, str):
            return os.path.splitext(name)[0]
    return None


def _loras(graph: _Graph, model_link) -> list[tuple[str, object, object]]:
    """(lora_name, strength_model, strength_clip) of the LoRA loaders on the model's path, nearest the
    checkpoint first; strength_clip is 0 for a model-only loader."""
    found = []
    for _ in range(256):
        node = graph.node(model_link)
        if node is None:
            break
        _, inputs, _ = node
        name = graph.literal(inputs.get("lora_name"))
        if isinstance(name, str):
            found.append((name, graph.literal(inputs.get("strength_model", 1.0)),
                          graph.literal(inputs.get("strength_clip", 0.0))))
        model_link = inputs.get("model")
    return found[::-1]


def _with_lora_tags(prompt: str, loras: list) -> str:
    """The prompt as A1111 writes it, with its `<lora:name:weight>` tags (`<lora:name:te:unet>` when
    the text encoder's and the UNet's strengths differ), added at the end unless already there."""
    tags = []
    for name, unet, text in loras:
        stem = os.path.splitext(os.path.basename(name))[0]
        if f"<lora:{stem}:" in prompt or not all(isinstance(v, (int, float)) for v in (unet, text)):
            continue
        weights = _number(unet) if unet == text else f"{_number(text)}:{_number(unet)}"
        tags.append(f"<lora:{stem}:{weights}>")
    return " ".join([prompt.rstrip(), *tags]).lstrip() if tags else prompt


def _lora_hashes(loras: list, lora_hash) -> str | None:
    """A1111's "Lora hashes": "name: hash, ..." (names without `:` and `,`)."""
    hashes = {}
    for name, _, _ in loras:
        value = lora_hash(name) if lora_hash else None
        if value:
            hashes[os.path.splitext(os.path.basename(name))[0].translate(str.maketrans("", "", ":,"))] = value
    return ", ".join(f"{name}: {value}" for name, value in hashes.items()) or None


_EMBEDDING_REFERENCE = re.compile(r"(?<!\w)embedding:([^\s,;:!?)\]}>\"']+)")  # ComfyUI's, less trailing punctuation


def _ti_hashes(text: str, ti_hash) -> str | None:
    """A1111's "TI hashes": "name: hash, ..." of the embeddings a prompt references."""
    hashes = {}
    for name in _EMBEDDING_REFERENCE.findall(text) if ti_hash else []:
        name = name.rstrip(".")
        value = ti_hash(name)
        if value:
            hashes[os.path.splitext(os.path.basename(name))[0].translate(str.maketrans("", "", ":,"))] = value
    return ", ".join(f"{name}: {value}" for name, value in hashes.items()) or None


def _clip_skip(graph: _Graph, conditioning_link) -> int | None:
    """`-stop_at_clip_layer` of the CLIPSetLastLayer on the positive prompt's clip path."""
    encoder = graph.follow(conditioning_link, lambda c, i: "clip" in i and ("text" in i or "text_g" in i),
                           through=("positive", "conditioning", "conditioning_1", "conditioning_to", "cond"))
    if encoder is None:
        return None
    last_layer = graph.follow(encoder[1]["clip"], lambda c, i: "stop_at_clip_layer" in i, through=("clip",))
    if last_layer is None:
        return None
    value = graph.literal(last_layer[1]["stop_at_clip_layer"])
    return -value if isinstance(value, int) else None


# -- PNG text chunks ------------------------------------------------------------------------------------

def png_text(prompt: dict | None = None, extra_pnginfo: dict | None = None,
             parameters: str | None = None) -> dict[str, str]:
    """The text chunks to write, in ComfyUI's order: `prompt`, each `extra_pnginfo` key (`workflow`),
    then A1111's `parameters`."""
    chunks: dict[str, str] = {}
    if prompt is not None:
        chunks["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        chunks[key] = json.dumps(value)
    if parameters:
        chunks["parameters"] = parameters
    return chunks


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            return  # truncated file: keep what was read
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def _inflate(data: bytes, budget: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, budget + 1)
    if len(out) > budget:
        raise PngTextTooLarge(f"the PNG's text chunks inflate to more than {MAX_TEXT_BYTES} bytes")
    return out


def _text_chunk(kind: bytes, body: bytes, budget: int) -> tuple[str, bytes, str] | None:
    """(key, text bytes, encoding) of a text chunk, inflating at most `budget` bytes."""
    key, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    if kind == b"tEXt":
        return key.decode("latin-1"), rest, "latin-1"
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:], budget), "latin-1"
    if kind == b"iTXt":
        compressed, rest = rest[:1] == b"\x01", rest[2:]
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        return key.decode("latin-1"), _inflate(text, budget) if compressed else text, "utf-8"
    return None


def read_png_text(source: str | Path | bytes) -> dict[str, str]:
    """Every tEXt / zTXt / iTXt chunk of a PNG (file path or bytes), wherever in the file it is.
    A file that isn't a PNG has none. PngTextTooLarge (a ValueError) when the texts hold more than
    MAX_TEXT_BYTES in all, inflated: every chunk counts, however many there are."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return {}
    texts: dict[str, str] = {}
    budget = MAX_TEXT_BYTES
    for kind, body in _chunks(bytes(data)):
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            try:
                found = _text_chunk(kind, body, budget)
            except PngTextTooLarge:
                raise
            except (ValueError, zlib.error):
                continue  # one broken chunk doesn't hide the others
            if found is not None:
                key, text, encoding = found
                budget -= len(text)
                if budget < 0:
                    raise PngTextTooLarge(f"the PNG's text chunks hold more than {MAX_TEXT_BYTES} bytes")
                texts[key] = text.decode(encoding, "replace")
    return texts


def _json_object(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_png_metadata(source: str | Path | bytes) -> dict:
    """`{"prompt": dict|None, "workflow": dict|None, "parameters": str|None}` from a PNG's text chunks."""
    texts = read_png_text(source)
    return {"prompt": _json_object(texts.get("prompt")), "workflow": _json_object(texts.get("workflow")),
            "parameters": texts.get("parameters")}
