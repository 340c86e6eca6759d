"""LoRA: files in kohya and diffusers/PEFT spellings, SD1 and SDXL, applied as patches that leave the
base model bit-identical; the LoraLoader nodes; `<lora:name:weight>` prompt tags and their infotext."""
import copy
import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import TINY_CKPT
from inkwash.nodes.core.loaders import CheckpointLoaderSimple
from inkwash.nodes.core.lora import LoraLoader, LoraLoaderModelOnly
from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import lora, sampling, text_encode
from inkwash.nodes.formats.png_metadata import (
    infotext_from_workflow,
    parse_infotext,
    read_png_metadata,
)
from inkwash.webui import generation as gen
from inkwash.webui import prompt_loras
from inkwash.webui.generation import BadRequest, GenerationParams
from PIL import Image
from safetensors.torch import save_file
from tiny_models import tiny_sd1, tiny_sdxl

# SD1 modules as kohya files trained on the original (LDM) UNet name them, and their diffusers names in
# the tiny SD1 UNet (4 levels, 2 layers each: the real block numbering). Written out rather than derived,
# so the table under test is checked against SD's own layout.
SD1_LDM = {
    "input_blocks_1_1_transformer_blocks_0_attn1_to_q": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "input_blocks_1_1_transformer_blocks_0_attn2_to_k": "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "input_blocks_2_1_transformer_blocks_0_attn1_to_out_0":
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0",
    "input_blocks_1_1_proj_in": "down_blocks.0.attentions.0.proj_in",  # a 1x1 conv in SD1
    "input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",  # 3x3 conv (LoCon)
    "input_blocks_1_0_emb_layers_1": "down_blocks.0.resnets.0.time_emb_proj",
    "input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
    "input_blocks_7_0_skip_connection": "down_blocks.2.resnets.0.conv_shortcut",
    "middle_block_1_transformer_blocks_0_ff_net_0_proj": "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "middle_block_2_out_layers_3": "mid_block.resnets.1.conv2",
    "output_blocks_3_1_transformer_blocks_0_ff_net_2": "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "output_blocks_5_2_conv": "up_blocks.1.upsamplers.0.conv",
    "output_blocks_11_1_proj_out": "up_blocks.3.attentions.2.proj_out",
    "time_embed_0": "time_embedding.linear_1",
}
SD1_TEXT = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.out_proj",
            "text_model.encoder.layers.2.mlp.fc1"]
# SDXL kohya files always use the SGM names; te1 is CLIP-L, te2 CLIP-G.
SDXL_LDM = {
    "input_blocks_4_1_transformer_blocks_0_attn2_to_k": "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "input_blocks_7_1_transformer_blocks_1_attn1_to_v": "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_v",
    "input_blocks_4_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
    "middle_block_1_proj_in": "mid_block.attentions.0.proj_in",  # linear in SDXL
    "output_blocks_0_1_transformer_blocks_1_ff_net_2": "up_blocks.0.attentions.0.transformer_blocks.1.ff.net.2",
    "output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
    "output_blocks_7_0_in_layers_2": "up_blocks.2.resnets.1.conv1",
}
SDXL_TEXT = {"te1": [f"text_model.encoder.layers.1.self_attn.{p}_proj" for p in ("q", "k", "v", "out")],
             "te2": ["text_model.encoder.layers.2.mlp.fc1", "text_model.encoder.layers.2.mlp.fc2"]}


# -- building LoRA files ----------------------------------------------------------------------------------

def pair_for(weight: torch.Tensor, rank: int, gen: torch.Generator):
    """Random (down, up) for a weight: a conv gets kohya's LoCon shapes (down k x k, up 1x1)."""
    if weight.ndim == 4:
        down = torch.randn(rank, weight.shape[1], *weight.shape[2:], generator=gen)
        up = torch.randn(weight.shape[0], rank, 1, 1, generator=gen)
    else:
        down = torch.randn(rank, weight.shape[1], generator=gen)
        up = torch.randn(weight.shape[0], rank, generator=gen)
    return down * 0.3, up * 0.3


def delta(down, up, scale, shape):
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * scale


class LoraBuilder:
    """Tensors of a LoRA file, and the delta (at strength 1) each one makes to a weight."""

    def __init__(self, seed=0, rank=4):
        self.tensors, self.deltas = {}, {}
        self.gen, self.rank = torch.Generator().manual_seed(seed), rank

    def add(self, component, module: str, key: str, style="kohya", alpha=None, scale=None):
        """`component` is where `module` lives; `key` the module's name in the file."""
        weight = component.get_parameter(module + ".weight")
        down, up = pair_for(weight, self.rank, self.gen)
        down_key, up_key = {"kohya": (".lora_down.weight", ".lora_up.weight"),
                            "peft": (".lora_A.weight", ".lora_B.weight"),
                            "diffusers": (".lora.down.weight", ".lora.up.weight"),
                            "processor": ("_lora.down.weight", "_lora.up.weight"),
                            "linear_layer": (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight")}[style]
        self.tensors[key + down_key], self.tensors[key + up_key] = down, up
        if alpha is not None:
            self.tensors[key + ".alpha"] = torch.tensor(float(alpha))
        if scale is None:
            scale = 1.0 if alpha is None else alpha / self.rank
        self.deltas[(id(component), module)] = (component, module, delta(down, up, scale, weight.shape))
        return self

    def write(self, path, metadata=None):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors, str(path), metadata=metadata)
        return path


def sd1_kohya(model, clip, seed=0, ldm=True) -> LoraBuilder:
    builder = LoraBuilder(seed)
    for ldm_name, module in SD1_LDM.items():
        key = "lora_unet_" + (ldm_name if ldm else module.replace(".", "_"))
        builder.add(model.unet, module, key, alpha=2.0)
    for module in SD1_TEXT:
        builder.add(clip.encoders[0], module.removeprefix("text_model."), "lora_te_" + module.replace(".", "_"),
                    alpha=8.0)
    return builder


def sdxl_kohya(model, clip, seed=0) -> LoraBuilder:
    builder = LoraBuilder(seed)
    for ldm_name, module in SDXL_LDM.items():
        builder.add(model.unet, module, "lora_unet_" + ldm_name, alpha=1.0)
    te1, te2 = clip.encoders  # CLIP-L (transformers 5 drops its text_model level) and CLIP-G
    for module in SDXL_TEXT["te1"]:
        builder.add(te1, module.removeprefix("text_model."), "lora_te1_" + module.replace(".", "_"), alpha=4.0)
    for module in SDXL_TEXT["te2"]:
        builder.add(te2, module, "lora_te2_" + module.replace(".", "_"), alpha=4.0)
    return builder


def state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_patched(value, builder: LoraBuilder, strength=1.0):
    """Inside `applied(value)`, each weight the builder targets is base + strength * delta, and every
    other weight is untouched."""
    components = [value.unet] if hasattr(value, "unet") else value.encoders
    before = [state(c) for c in components]
    with lora.applied(value):
        for component, base in zip(components, before):
            targets = {module + ".weight": d for (cid, module), (_, _, d) in builder.deltas.items()
                       if cid == id(component)}
            for name, weight in component.state_dict().items():
                if name in targets:
                    torch.testing.assert_close(weight, base[name] + strength * targets[name], rtol=1e-5, atol=1e-5)
                else:
                    assert torch.equal(weight, base[name]), name
    for component, base in zip(components, before):
        assert all(torch.equal(v, base[k]) for k, v in component.state_dict().items())


# -- file formats -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ldm", [True, False], ids=["ldm-names", "diffusers-names"])
def test_kohya_sd1_patches_base_plus_scaled_delta(tmp_path, ldm):
    model, clip, _ = tiny_sd1()
    builder = sd1_kohya(model, clip, ldm=ldm)
    lora_file = lora.read_lora(builder.write(tmp_path / "k.safetensors"))
    patched_model, patched_clip = lora.with_lora(model, clip, lora_file, 0.5, 1.5)
    assert len(patched_model.lora_patches) == len(SD1_LDM) and len(patched_clip.lora_patches) == len(SD1_TEXT)
    assert model.lora_patches == () and clip.lora_patches == ()  # the inputs are left as they were
    assert patched_model.unet is model.unet and patched_clip.encoders[0] is clip.encoders[0]  # shared modules
    assert_patched(patched_model, builder, 0.5)
    assert_patched(patched_clip, builder, 1.5)


def test_peft_and_older_diffusers_spellings_sd1(tmp_path):
    model, clip, _ = tiny_sd1()
    unet, encoder = model.unet, clip.encoders[0]
    attention = "down_blocks.1.attentions.0.transformer_blocks.0"
    builder = LoraBuilder(1)
    # PEFT (diffusers' save_lora_weights), alpha from its lora_adapter_metadata: unet 8 / rank 4, text 2 / 4
    builder.add(unet, f"{attention}.attn1.to_q", f"unet.{attention}.attn1.to_q", "peft", scale=2.0)
    builder.add(unet, "up_blocks.2.resnets.0.conv1", "unet.up_blocks.2.resnets.0.conv1", "peft", scale=2.0)
    builder.add(encoder, "encoder.layers.1.self_attn.v_proj",
                "text_encoder.text_model.encoder.layers.1.self_attn.v_proj", "peft", scale=0.5)
    # older diffusers: LoRACompatible layers, attention processors (with and without the unet prefix)
    builder.add(unet, "down_blocks.0.resnets.1.conv2", "unet.down_blocks.0.resnets.1.conv2", "diffusers", scale=2.0)
    builder.add(unet, f"{attention}.attn2.to_out.0", f"unet.{attention}.attn2.processor.to_out", "processor", scale=2.0)
    builder.add(unet, "up_blocks.3.attentions.0.transformer_blocks.0.attn1.to_k",  # no component: no metadata alpha
                "up_blocks.3.attentions.0.transformer_blocks.0.attn1.processor.to_k", "processor", scale=1.0)
    builder.add(encoder, "encoder.layers.0.self_attn.q_proj", "text_encoder.text_model.encoder.layers.0.self_attn.to_q",
                "processor", scale=0.5)
    builder.add(encoder, "encoder.layers.0.mlp.fc2", "text_encoder.text_model.encoder.layers.0.mlp.fc2",
                "linear_layer", scale=0.5)
    metadata = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 8,
                                                     "text_encoder.r": 4, "text_encoder.lora_alpha": 2})}
    lora_file = lora.read_lora(builder.write(tmp_path / "peft.safetensors", metadata))
    patched_model, patched_clip = lora.with_lora(model, clip, lora_file, 1.0, 1.0)
    assert_patched(patched_model, builder)
    assert_patched(patched_clip, builder)


def test_kohya_sdxl_with_both_text_encoders(tmp_path):
    model, clip, _ = tiny_sdxl()
    builder = sdxl_kohya(model, clip)
    lora_file = lora.read_lora(builder.write(tmp_path / "xl.safetensors"))
    patched_model, patched_clip = lora.with_lora(model, clip, lora_file, 1.0, 0.7)
    assert {p.component for p in patched_clip.lora_patches} == {0, 1}
    assert_patched(patched_model, builder)
    assert_patched(patched_clip, builder, 0.7)


def test_pickled_lora_through_weights_only_load(tmp_path):
    model, clip, _ = tiny_sd1()
    builder = sd1_kohya(model, clip)
    path = tmp_path / "k.pt"
    torch.save(builder.tensors, path)
    assert_patched(lora.with_lora(model, None, lora.read_lora(path), 1.0, 0.0)[0], builder)


# -- the same result as diffusers -------------------------------------------------------------------------

def _fused(pipe, load) -> dict:
    """Component state dicts after diffusers loads a LoRA, fuses it at scale 1 and drops the adapters."""
    load(pipe)
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    return pipe


def _assert_same_weights(ours, theirs):
    ours, theirs = ours.state_dict(), theirs.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("ldm", [True, False], ids=["ldm-names", "diffusers-names"])
def test_sd1_kohya_matches_diffusers_load_lora_weights(tmp_path, ldm):
    pytest.importorskip("peft")
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    model, clip, vae = tiny_sd1()
    path = sd1_kohya(model, clip, ldm=ldm).write(tmp_path / "k.safetensors")
    pipe = StableDiffusionPipeline(vae=vae.vae, text_encoder=copy.deepcopy(clip.encoders[0]),
                                   tokenizer=clip.tokenizers[0], unet=copy.deepcopy(model.unet),
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)

    def load(pipe):
        if not ldm:
            pipe.load_lora_weights(str(path))
            return
        # the SD pipeline maps LDM block names only when told the UNet's config (its SDXL one always does)
        tensors, alphas = pipe.lora_state_dict(str(path), unet_config=pipe.unet.config)
        pipe.load_lora_into_unet(tensors, alphas, unet=pipe.unet)
        pipe.load_lora_into_text_encoder(tensors, alphas, text_encoder=pipe.text_encoder, prefix="text_encoder")

    _fused(pipe, load)
    patched_model, patched_clip = lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)
    with lora.applied(patched_model), lora.applied(patched_clip):
        _assert_same_weights(model.unet, pipe.unet)
        _assert_same_weights(clip.encoders[0], pipe.text_encoder)


def test_peft_file_with_alpha_metadata_matches_diffusers(tmp_path):
    pytest.importorskip("peft")
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    model, clip, vae = tiny_sd1()
    builder = LoraBuilder(3)
    unet_modules = ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
                    "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2"]
    text_modules = [f"text_model.encoder.layers.1.self_attn.{p}_proj" for p in ("q", "k", "v", "out")]
    for module in unet_modules:
        builder.add(model.unet, module, "unet." + module, "peft")
    for module in text_modules:
        builder.add(clip.encoders[0], module.removeprefix("text_model."), "text_encoder." + module, "peft")
    metadata = {"lora_adapter_metadata": json.dumps({
        "unet.r": 4, "unet.lora_alpha": 8, "unet.target_modules": unet_modules,
        "text_encoder.r": 4, "text_encoder.lora_alpha": 2,
        "text_encoder.target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"]})}
    path = builder.write(tmp_path / "peft.safetensors", metadata)
    pipe = StableDiffusionPipeline(vae=vae.vae, text_encoder=copy.deepcopy(clip.encoders[0]),
                                   tokenizer=clip.tokenizers[0], unet=copy.deepcopy(model.unet),
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    _fused(pipe, lambda p: p.load_lora_weights(str(path)))
    patched_model, patched_clip = lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)
    with lora.applied(patched_model), lora.applied(patched_clip):
        _assert_same_weights(model.unet, pipe.unet)
        _assert_same_weights(clip.encoders[0], pipe.text_encoder)


def test_sdxl_kohya_matches_diffusers_load_lora_weights(tmp_path):
    pytest.importorskip("peft")
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    model, clip, vae = tiny_sdxl()
    path = sdxl_kohya(model, clip).write(tmp_path / "xl.safetensors")
    pipe = StableDiffusionXLPipeline(vae=vae.vae, text_encoder=copy.deepcopy(clip.encoders[0]),
                                     text_encoder_2=copy.deepcopy(clip.encoders[1]), tokenizer=clip.tokenizers[0],
                                     tokenizer_2=clip.tokenizers[1], unet=copy.deepcopy(model.unet),
                                     scheduler=EulerDiscreteScheduler())
    _fused(pipe, lambda p: p.load_lora_weights(str(path)))
    patched_model, patched_clip = lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)
    with lora.applied(patched_model), lora.applied(patched_clip):
        _assert_same_weights(model.unet, pipe.unet)
        _assert_same_weights(clip.encoders[0], pipe.text_encoder)
        _assert_same_weights(clip.encoders[1], pipe.text_encoder_2)


# -- patches while sampling -------------------------------------------------------------------------------

def _sample(model, clip, seed=5):
    positive, negative = text_encode.encode(clip, "a red circle"), text_encode.encode(clip, "")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return sampling.sample(model, positive, negative, latent, seed, 1, 6.0, "euler", "normal")["samples"]


def test_weight_zero_is_the_base_image_and_sampling_restores_the_base_exactly(tmp_path):
    model, clip, _ = tiny_sd1()
    lora_file = lora.read_lora(sd1_kohya(model, clip).write(tmp_path / "k.safetensors"))
    unet_before, clip_before = state(model.unet), state(clip.encoders[0])
    base = _sample(model, clip)

    zero_model, zero_clip = lora.with_lora(model, clip, lora_file, 0.0, 0.0)
    assert zero_model is model and zero_clip is clip  # no patches at all
    assert torch.equal(_sample(zero_model, zero_clip), base)

    with_lora = _sample(*lora.with_lora(model, clip, lora_file, 1.0, 1.0))
    assert (with_lora - base).abs().max() > 1e-3  # the LoRA changes the image
    model_only = _sample(*lora.with_lora(model, clip, lora_file, 1.0, 0.0))
    assert not torch.equal(model_only, with_lora) and not torch.equal(model_only, base)

    for module, before in ((model.unet, unet_before), (clip.encoders[0], clip_before)):
        assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    assert torch.equal(_sample(model, clip), base)


def test_weights_are_restored_when_the_run_fails(tmp_path):
    model, clip, _ = tiny_sd1()
    patched, _ = lora.with_lora(model, None, lora.read_lora(sd1_kohya(model, clip).write(tmp_path / "k.safetensors")),
                                1.0, 0.0)
    before = state(model.unet)
    with pytest.raises(RuntimeError, match="interrupted"), lora.applied(patched):
        raise RuntimeError("interrupted")
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())


def test_two_loras_stack(tmp_path):
    model, clip, _ = tiny_sd1()
    first, second = sd1_kohya(model, clip, seed=1), sd1_kohya(model, clip, seed=2)
    stacked, _ = lora.with_lora(model, None, lora.read_lora(first.write(tmp_path / "a.safetensors")), 0.5, 0.0)
    stacked, _ = lora.with_lora(stacked, None, lora.read_lora(second.write(tmp_path / "b.safetensors")), 2.0, 0.0)
    both = LoraBuilder()
    for key, (component, module, d) in first.deltas.items():
        both.deltas[key] = (component, module, 0.5 * d + 2.0 * second.deltas[key][2])
    assert_patched(stacked, both)


def test_fp16_weights_are_patched_in_their_dtype_and_restored_bit_for_bit(tmp_path):
    model, clip, _ = tiny_sd1()
    builder = sd1_kohya(model, clip)
    model.unet.half()
    before = state(model.unet)
    patched, _ = lora.with_lora(model, None, lora.read_lora(builder.write(tmp_path / "k.safetensors")), 1.0, 0.0)
    module = SD1_LDM["input_blocks_1_0_in_layers_2"]
    with lora.applied(patched):
        weight = model.unet.get_parameter(module + ".weight")
        expected = (before[module + ".weight"].float() + builder.deltas[(id(model.unet), module)][2]).half()
        assert weight.dtype == torch.float16 and torch.equal(weight, expected)
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())


# -- bad files --------------------------------------------------------------------------------------------

def test_a_file_with_nothing_for_this_model_names_the_file_and_its_keys(tmp_path):
    model, clip, _ = tiny_sd1()
    path = tmp_path / "other.safetensors"
    save_file({"lora_unet_nowhere_block.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_nowhere_block.lora_up.weight": torch.zeros(8, 4)}, str(path))
    with pytest.raises(lora.LoraError, match=r"other\.safetensors.*lora_unet_nowhere_block"):
        lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(lora.LoraError, match=r"other\.safetensors: no LoRA weights found.*conv_in"):
        lora.read_lora(path)


def test_unknown_keys_are_skipped_when_others_apply(tmp_path, caplog):
    model, clip, _ = tiny_sd1()
    builder = sd1_kohya(model, clip)
    builder.tensors["lora_unet_foo.hada_w1_a"] = torch.zeros(2, 2)  # LoHa: not a plain LoRA pair
    patched, _ = lora.with_lora(model, clip, lora.read_lora(builder.write(tmp_path / "mixed.safetensors")), 1.0, 1.0)
    assert_patched(patched, builder)
    assert "hada_w1_a" in caplog.text


def test_an_sdxl_lora_on_sd1_is_refused_as_another_family(tmp_path):
    xl_model, xl_clip, _ = tiny_sdxl()
    path = sdxl_kohya(xl_model, xl_clip).write(tmp_path / "xl.safetensors")
    model, clip, _ = tiny_sd1()
    with pytest.raises(lora.LoraError, match=r"xl\.safetensors: .*another model family"):
        lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)


class Payload:
    """Stands for any object a pickle could run code to build."""


def test_corrupt_and_unsafe_files_are_refused(tmp_path):
    model, clip, _ = tiny_sd1()
    good = sd1_kohya(model, clip).write(tmp_path / "k.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(lora.LoraError, match="truncated.safetensors"):
        lora.read_lora(truncated)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"lora_te_x.alpha": torch.ones(()), "callback": Payload()}, unsafe)
    with pytest.raises(lora.LoraError, match="refused"):
        lora.read_lora(unsafe)


# -- the nodes, through the executor ----------------------------------------------------------------------

def _txt2img(**inputs) -> dict:
    workflow = gen.txt2img_workflow(GenerationParams(prompt="a red circle", checkpoint=TINY_CKPT, steps=1, seed=3,
                                                     width=64, height=64, sampler_name="euler"))
    workflow["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    if inputs:
        workflow["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], **inputs}}
        workflow["3"]["inputs"]["model"] = ["10", 0]
        workflow["6"]["inputs"]["clip"] = workflow["7"]["inputs"]["clip"] = ["10", 1]
    return workflow


def _image(folders, executor, workflow) -> np.ndarray:
    result = executor.execute(workflow)
    assert result.status == "success", result.error
    entry = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(folders.temp_dir / entry["subfolder"] / entry["filename"]))


def test_lora_loader_in_a_workflow_leaves_the_cached_base_model_alone(registry, folders, checkpoint):
    base_model, base_clip, _ = CheckpointLoaderSimple().run(TINY_CKPT)  # the cached model every run shares
    sd1_kohya(base_model, base_clip).write(folders.models_dir / "loras" / "style.safetensors")
    before = state(base_model.unet), state(base_clip.encoders[0])

    base = _image(folders, Executor(registry), _txt2img())
    styled = _image(folders, Executor(registry), _txt2img(lora_name="style.safetensors", strength_model=1.0,
                                                          strength_clip=1.0))
    zero = _image(folders, Executor(registry), _txt2img(lora_name="style.safetensors", strength_model=0.0,
                                                        strength_clip=0.0))
    assert np.abs(styled.astype(int) - base).max() > 8
    assert np.array_equal(zero, base)
    assert np.array_equal(_image(folders, Executor(registry), _txt2img()), base)
    for module, saved in zip((base_model.unet, base_clip.encoders[0]), before):
        assert all(torch.equal(v, saved[k]) for k, v in module.state_dict().items())


def test_lora_loader_declarations_and_fingerprint(folders):
    info = LoraLoader.object_info("LoraLoader")
    assert info["input_order"]["required"] == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    strength = info["input"]["required"]["strength_model"][1]
    assert {k: strength[k] for k in ("default", "min", "max", "step")} == {"default": 1.0, "min": -100.0, "max": 100.0,
                                                                         "step": 0.01}
    assert info["output"] == ["MODEL", "CLIP"] and info["display_name"] == "Load LoRA"
    assert LoraLoaderModelOnly.object_info("LoraLoaderModelOnly")["input_order"]["required"] == [
        "model", "lora_name", "strength_model"]

    model, clip, _ = tiny_sd1()
    path = sd1_kohya(model, clip).write(folders.models_dir / "loras" / "style.safetensors")
    assert LoraLoader.object_info("LoraLoader")["input"]["required"]["lora_name"][0] == ["style.safetensors"]
    first = LoraLoader.fingerprint(lora_name="style.safetensors")
    sd1_kohya(model, clip, seed=9).write(path.parent / "replacement.safetensors").replace(path)
    assert LoraLoader.fingerprint(lora_name="style.safetensors") != first  # a replaced file re-runs the node

    only = LoraLoaderModelOnly().run(model, "style.safetensors", 0.8)[0]
    assert len(only.lora_patches) == len(SD1_LDM) and model.lora_patches == ()


def test_checkpoint_save_merges_the_lora_and_leaves_the_model_alone(folders):
    from inkwash.nodes.core.loaders import CheckpointSave
    from inkwash.nodes.runtime.checkpoint_load import load_checkpoint

    model, clip, vae = tiny_sd1()
    builder = sd1_kohya(model, clip)
    before = state(model.unet)
    lora_file = lora.read_lora(builder.write(folders.models_dir / "k.safetensors"))
    patched_model, patched_clip = lora.with_lora(model, clip, lora_file, 1.0, 1.0)
    saved = CheckpointSave().run(patched_model, patched_clip, vae, "merged").ui["checkpoints"][0]
    merged, merged_clip, _ = load_checkpoint(folders.output_dir / saved["filename"])
    for component, module, d in builder.deltas.values():
        expected = component.get_parameter(module + ".weight") + d
        loaded = (merged.unet if component is model.unet else merged_clip.encoders[0]).get_parameter(module + ".weight")
        torch.testing.assert_close(loaded, expected, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())


# -- prompt tags ------------------------------------------------------------------------------------------

def test_extract_reads_a1111_lora_tags():
    text, tags = prompt_loras.extract("a cat <lora:style:0.8>, <lora:ink> in snow <lyco:paper:0.4:1.2>")
    assert text == "a cat ,  in snow "
    assert tags == [("style", 0.8, 0.8), ("ink", 1.0, 1.0), ("paper", 1.2, 0.4)]  # (name, unet, text encoder)
    assert prompt_loras.extract("<lora:a:te=0.2:unet=0.9>")[1] == [("a", 0.9, 0.2)]
    assert prompt_loras.extract("<lora:a:unet=0.3>")[1] == [("a", 0.3, 1.0)]
    assert prompt_loras.extract("no tags (here:1.2) <hypernet:x:1>") == ("no tags (here:1.2) <hypernet:x:1>", [])
    with pytest.raises(prompt_loras.LoraTagError, match="not a number"):
        prompt_loras.extract("<lora:a:lots>")


def _lora_folder(folders, *names):
    model, clip, _ = tiny_sd1()
    for index, name in enumerate(names):
        sd1_kohya(model, clip, seed=index).write(folders.models_dir / "loras" / name)


def test_tags_become_chained_lora_loaders(folders, checkpoint):
    _lora_folder(folders, "style.safetensors", "sub/ink.safetensors")
    params = GenerationParams(prompt="a red circle <lora:style:0.7> <lora:ink:0.2:0.9>", checkpoint=TINY_CKPT,
                              clip_skip=2, seed=1)
    plan = gen.build_txt2img(params, folders)
    workflow = plan.workflows[0]
    loaders = {k: v for k, v in workflow.items() if v["class_type"] == "LoraLoader"}
    (first, a), (second, b) = sorted(loaders.items())
    assert a["inputs"] == {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.safetensors",
                           "strength_model": 0.7, "strength_clip": 0.7}
    assert b["inputs"] == {"model": [first, 0], "clip": [first, 1], "lora_name": "sub/ink.safetensors",
                           "strength_model": 0.9, "strength_clip": 0.2}
    assert workflow["3"]["inputs"]["model"] == [second, 0]
    assert workflow["20"]["inputs"]["clip"] == [second, 1]  # clip skip after the LoRAs, as in A1111
    assert workflow["6"]["inputs"]["text"].strip() == "a red circle"
    assert plan.params.prompt == params.prompt  # A1111 reports the prompt with its tags


def test_an_unknown_lora_name_is_left_out_with_a_warning_naming_it(folders, checkpoint):
    _lora_folder(folders, "style.safetensors")
    plan = gen.build_txt2img(GenerationParams(prompt="x <lora:missing:1> <lora:style:0.5>", checkpoint=TINY_CKPT),
                             folders)
    loaders = [node["inputs"]["lora_name"] for node in plan.workflows[0].values() if node["class_type"] == "LoraLoader"]
    assert loaders == ["style.safetensors"]  # the job still generates, with the LoRA that is there
    assert len(plan.warnings) == 1 and "missing" in plan.warnings[0] and "style" in plan.warnings[0]
    assert gen.build_txt2img(GenerationParams(prompt="x <lora:style:1>", checkpoint=TINY_CKPT), folders).warnings == []
    with pytest.raises(BadRequest, match="not a number"):
        gen.resolve(GenerationParams(prompt="x <lora:style:big>", checkpoint=TINY_CKPT), folders)


def a1111_lora_hash(path) -> str:
    """A1111's LoRA hash, computed here from its definition: sha256 of what follows the header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


def test_tab_run_writes_tags_and_lora_hashes_in_the_infotext(registry, folders, checkpoint):
    _lora_folder(folders, "style.safetensors")
    path = folders.models_dir / "loras" / "style.safetensors"
    plan = gen.build_txt2img(GenerationParams(prompt="a red circle <lora:style:0.7>", checkpoint=TINY_CKPT, steps=2,
                                              seed=4, width=64, height=64), folders)
    result = Executor(registry).execute(plan.workflows[0])
    assert result.status == "success", result.error
    saved = plan.finish(folders, 0, result.outputs)[0]
    info = parse_infotext(read_png_metadata(saved)["parameters"])
    assert info["Prompt"] == "a red circle <lora:style:0.7>"
    assert info["Lora hashes"] == f"style: {a1111_lora_hash(path)}"
    assert prompt_loras.infotext_fields(prompt_loras.extract(plan.params.prompt)[1], folders) == {
        "Lora hashes": f"style: {a1111_lora_hash(path)}"}


def test_infotext_of_a_comfyui_graph_with_lora_loaders():
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                      "lora_name": "a/x.safetensors", "strength_model": 0.5,
                                                      "strength_clip": 1.0}},
        "11": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": "y.pt",
                                                               "strength_model": 1.0}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": "a cat"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": ""}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["11", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "seed": 1, "steps": 20, "cfg": 7, "sampler_name": "euler",
                                                   "scheduler": "normal", "latent_image": ["5", 0], "denoise": 1}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }
    text = infotext_from_workflow(graph, "9", lora_hash=lambda name: {"a/x.safetensors": "aaaa"}.get(name),
                                  version="v")
    info = parse_infotext(text)
    assert info["Prompt"] == "a cat <lora:x:1:0.5> <lora:y:0:1>"
    assert info["Lora hashes"] == "x: aaaa"


def test_lora_tags_in_the_negative_and_hires_prompts_are_dropped_from_their_text(folders, checkpoint):
    _lora_folder(folders, "style.safetensors")
    params = GenerationParams(prompt="a cat <lora:style:0.5>", negative_prompt="blurry <lora:style:1>",
                              enable_hr=True, hr_prompt="a sharp cat <lora:style>", hr_scale=2.0,
                              checkpoint=TINY_CKPT, seed=1)
    workflow = gen.build_txt2img(params, folders).workflows[0]
    texts = [n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "CLIPTextEncode"]
    assert sorted(t.strip() for t in texts) == ["a cat", "a sharp cat", "blurry"]
    assert sum(n["class_type"] == "LoraLoader" for n in workflow.values()) == 1
