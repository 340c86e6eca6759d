"""Checkpoint files: detection, loading, saving, round trips through the loader and save nodes."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import (tiny_controlnet, tiny_sd1, tiny_sd1_standard, tiny_sd2, tiny_sdxl, write_tiny_checkpoint,
                         write_tiny_controlnet)

from inkwash.nodes.core.loaders import CheckpointLoaderSimple, CheckpointSave, ControlNetLoader, VAELoader
from inkwash.nodes.declare import NodeContext
from inkwash.nodes.folders import UnsafePath
from inkwash.nodes.runtime import devices, model_cache
from inkwash.nodes.runtime.checkpoint_load import load_checkpoint, load_controlnet, load_vae
from inkwash.nodes.runtime.ldm_keys import vae_to_ldm
from inkwash.nodes.runtime.model_detect import detect_family, is_v_prediction
from inkwash.nodes.runtime.model_types import SD1, SD2, SDXL, SDXL_REFINER
from inkwash.nodes.runtime.state_dict_files import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_model_cache")

FAMILIES = {
    "sd1": lambda: tiny_sd1(),
    "sd1-inpaint": lambda: tiny_sd1("inpaint"),
    "sd1-depth": lambda: tiny_sd1("depth"),
    "sd2-v": lambda: tiny_sd2("v_prediction"),
    "sd2-epsilon": lambda: tiny_sd2("epsilon"),
    "sd2-inpaint": lambda: tiny_sd2("epsilon", "inpaint"),
    "sd2-depth": lambda: tiny_sd2("epsilon", "depth"),
    "sdxl": lambda: tiny_sdxl(),
    "sdxl-refiner": lambda: tiny_sdxl(refiner=True),
}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
def unet_output(model):
    unet = model.unet
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=gen)
    context = torch.randn(1, 5, unet.config.cross_attention_dim, generator=gen)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        time_ids = 5 if model.family.name == SDXL_REFINER else 6
        pooled = unet.config.projection_class_embeddings_input_dim - time_ids * unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=gen),
                                       "time_ids": torch.randn(1, time_ids, generator=gen)}}
    return unet(x, torch.tensor([500]), encoder_hidden_states=context, **extra).sample


@torch.no_grad()
def text_outputs(clip):
    outputs = []
    for tokenizer, encoder in zip(clip.tokenizers, clip.encoders):
        ids = tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        out = encoder(ids, output_hidden_states=True)
        outputs += [out.last_hidden_state, out.hidden_states[-2]]
        if hasattr(out, "text_embeds"):
            outputs.append(out.text_embeds)
    return outputs


@torch.no_grad()
def vae_decode(vae):
    return vae.vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))).sample


def save_with_node(folders, parts, prompt=None):
    model, clip, vae = parts
    ctx = NodeContext(prompt=prompt or {"1": {"class_type": "CheckpointSave", "inputs": {}}},
                      extra_pnginfo={"workflow": {"nodes": []}})
    result = CheckpointSave(ctx).run(model=model, clip=clip, vae=vae, filename_prefix="checkpoints/ComfyUI")
    saved = result.ui["checkpoints"][0]
    return folders.output_dir / saved["subfolder"] / saved["filename"]


def install(folders, path, kind="checkpoints", name=None):
    target = folders.models_dir / kind / (name or path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    return target.name


@pytest.mark.parametrize("family", FAMILIES)
def test_save_node_then_loader_node_round_trip(folders, family):
    parts = FAMILIES[family]()
    saved = save_with_node(folders, parts)
    assert saved.name == "ComfyUI_00001_.safetensors" and saved.parent.name == "checkpoints"
    model2, clip2, vae2 = CheckpointLoaderSimple().run(ckpt_name=install(folders, saved))
    model, clip, vae = parts

    assert model2.family == model.family and clip2.family == model.family and vae2.family == model.family
    assert model2.scheduler_config["prediction_type"] == model.family.prediction_type
    assert same_weights(model.unet, model2.unet)
    assert len(clip2.encoders) == len(clip.encoders)
    assert all(same_weights(a, b) for a, b in zip(clip.encoders, clip2.encoders))
    assert same_weights(vae.vae, vae2.vae)
    assert torch.equal(unet_output(model), unet_output(model2))
    assert all(torch.equal(a, b) for a, b in zip(text_outputs(clip), text_outputs(clip2)))
    assert torch.equal(vae_decode(vae), vae_decode(vae2))
    assert [t.pad_token_id for t in clip2.tokenizers] == [t.pad_token_id for t in clip.tokenizers]


def test_saved_file_uses_the_original_layout_and_metadata(folders):
    saved = save_with_node(folders, tiny_sdxl(), prompt={"7": {"class_type": "X", "inputs": {}}})
    with safe_open(saved, "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys
    assert json.loads(metadata["prompt"]) == {"7": {"class_type": "X", "inputs": {}}}
    assert json.loads(metadata["workflow"]) == {"nodes": []}
    assert metadata["modelspec.prediction_type"] == "epsilon"
    assert not list(saved.parent.glob(".*.tmp"))  # the atomic write left nothing behind
    second = save_with_node(folders, tiny_sdxl())
    assert second.name == "ComfyUI_00002_.safetensors"


def test_sd2_file_round_trips_bit_identical_with_its_unused_last_block(tmp_path):
    first = write_tiny_checkpoint(tmp_path, "a.safetensors", tiny_sd2())
    original = load_file(first)
    # a freshly built SD2 encoder (3 blocks) is written with an identity 4th block and projection
    assert not original["cond_stage_model.model.transformer.resblocks.3.attn.out_proj.weight"].any()
    assert not original["cond_stage_model.model.transformer.resblocks.3.mlp.c_proj.weight"].any()
    assert torch.equal(original["cond_stage_model.model.text_projection"], torch.eye(32))
    # a real file's last block is arbitrary: it must survive load + save untouched
    original["cond_stage_model.model.transformer.resblocks.3.mlp.c_proj.weight"].normal_()
    original["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    with safe_open(first, "pt") as f:
        save_file(original, tmp_path / "b.safetensors", metadata=f.metadata())
    model, clip, vae = load_checkpoint(tmp_path / "b.safetensors")
    assert clip.encoders[0].config.num_hidden_layers == 3
    again = load_file(write_tiny_checkpoint(tmp_path, "c.safetensors", (model, clip, vae)))
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)


def test_detection_of_families_and_kinds(tmp_path):
    expected = {"sd1": (SD1, "base"), "sd1-inpaint": (SD1, "inpaint"), "sd1-depth": (SD1, "depth"),
                "sd2-v": (SD2, "base"), "sd2-inpaint": (SD2, "inpaint"), "sd2-depth": (SD2, "depth"),
                "sdxl": (SDXL, "base"), "sdxl-refiner": (SDXL_REFINER, "base")}
    for name, (family, kind) in expected.items():
        path = write_tiny_checkpoint(tmp_path, f"{name}.safetensors", FAMILIES[name]())
        detected = detect_family(load_file(path))
        assert (detected.name, detected.kind) == (family, kind), name


def strip_prediction_hints(path, out):
    """The file as another tool would write it: no v_pred marker, no modelspec.prediction_type."""
    tensors = {k: v for k, v in load_file(path).items() if k != "v_pred"}
    with safe_open(path, "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "modelspec.prediction_type"}
    save_file(tensors, out, metadata=metadata)
    return out


@pytest.mark.parametrize("bias, expected", [(-2.0, "v_prediction"), (0.0, "epsilon")])
def test_sd2_prediction_type_from_a1111_probe(tmp_path, bias, expected):
    model, clip, vae = tiny_sd2("epsilon")
    with torch.no_grad():  # a UNet whose answer is fixed: bias - 0.5 against the probe's 0.5 input
        model.unet.conv_out.weight.zero_()
        model.unet.conv_out.bias.fill_(bias)
    assert is_v_prediction(model.unet) == (expected == "v_prediction")
    path = strip_prediction_hints(write_tiny_checkpoint(tmp_path, "x.safetensors", (model, clip, vae)),
                                  tmp_path / "plain.safetensors")
    loaded = load_checkpoint(path)[0]
    assert loaded.family.prediction_type == expected
    assert loaded.scheduler_config["prediction_type"] == expected


def test_sd2_prediction_type_from_marker_metadata_and_sidecar_yaml(tmp_path):
    v_file = write_tiny_checkpoint(tmp_path, "v.safetensors", tiny_sd2("v_prediction"))
    assert "v_pred" in load_file(v_file)
    assert load_checkpoint(v_file)[0].family.prediction_type == "v_prediction"

    model, clip, vae = tiny_sd2("epsilon")
    with torch.no_grad():  # the probe alone would call this one v-prediction
        model.unet.conv_out.weight.zero_()
        model.unet.conv_out.bias.fill_(-2.0)
    eps_file = write_tiny_checkpoint(tmp_path, "eps.safetensors", (model, clip, vae))
    assert load_checkpoint(eps_file)[0].family.prediction_type == "epsilon"  # modelspec.prediction_type

    plain = strip_prediction_hints(eps_file, tmp_path / "plain.safetensors")
    (tmp_path / "plain.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    assert load_checkpoint(plain)[0].family.prediction_type == "epsilon"
    (tmp_path / "plain.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_checkpoint(plain)[0].family.prediction_type == "v_prediction"


def test_sd2_v_and_epsilon_files_generate_through_the_txt2img_workflow(folders, registry):
    from PIL import Image

    from inkwash.nodes.executor import Executor
    from inkwash.webui.generation import GenerationParams, resolve, txt2img_workflow

    files = {"sd2-768-v.safetensors": (tiny_sd2("v_prediction"), "v_prediction"),
             "sd2-base.safetensors": (tiny_sd2("epsilon", seed=1), "epsilon"),
             "sd2-768-v-as-epsilon.safetensors": (tiny_sd2("epsilon"), "epsilon")}  # the v weights, marked epsilon
    images = {}
    for name, (parts, prediction_type) in files.items():
        install(folders, write_tiny_checkpoint(folders.output_dir, name, parts))
        model = CheckpointLoaderSimple().run(ckpt_name=name)[0]
        assert model.family.prediction_type == model.scheduler_config["prediction_type"] == prediction_type
        params = resolve(GenerationParams(prompt="a red circle", checkpoint=name, steps=3, seed=5, width=64, height=64))
        result = Executor(registry).execute(txt2img_workflow(params))
        assert result.status == "success", result.error
        entry = result.outputs["9"]["images"][0]
        images[name] = np.asarray(Image.open(folders.output_dir / entry["subfolder"] / entry["filename"]), dtype=int)
        assert images[name].shape == (64, 64, 3)
        assert images[name].std() > 1  # a NaN latent decodes to a flat black image
    assert np.abs(images["sd2-768-v.safetensors"] - images["sd2-768-v-as-epsilon.safetensors"]).mean() > 1


def test_zero_terminal_snr_marker_round_trips(tmp_path):
    model, clip, vae = tiny_sd1()
    model.family.prediction_type = "v_prediction"
    model.scheduler_config.update(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    path = write_tiny_checkpoint(tmp_path, "ztsnr.safetensors", (model, clip, vae))
    assert {"v_pred", "ztsnr"} <= load_file(path).keys()
    loaded = load_checkpoint(path)[0]
    assert loaded.family.prediction_type == "v_prediction"
    assert loaded.scheduler_config["rescale_betas_zero_snr"] is True
    assert loaded.scheduler_config["timestep_spacing"] == "trailing"


def test_ckpt_loads_through_weights_only_from_shapes_alone(tmp_path):
    """A pickle carries no recorded configs: the configs come from shapes and SD's conventions."""
    parts = tiny_sd1_standard()
    tensors = load_file(write_tiny_checkpoint(tmp_path, "a.safetensors", parts))
    torch.save({"state_dict": tensors, "global_step": 840000}, tmp_path / "model.ckpt")
    model, clip, vae = load_checkpoint(tmp_path / "model.ckpt")
    assert model.family.name == SD1
    assert same_weights(parts[0].unet, model.unet)
    assert torch.equal(unet_output(parts[0]), unet_output(model))
    assert all(torch.equal(a, b) for a, b in zip(text_outputs(parts[1]), text_outputs(clip)))
    assert torch.equal(vae_decode(parts[2]), vae_decode(vae))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_objects_is_refused(tmp_path):
    tensors = load_file(write_tiny_checkpoint(tmp_path, "a.safetensors"))
    torch.save({"state_dict": tensors, "callback": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused.*Python objects"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_corrupt_and_unknown_files_give_clear_errors(tmp_path):
    good = write_tiny_checkpoint(tmp_path, "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: not a readable \.safetensors file"):
        load_checkpoint(tmp_path / "truncated.safetensors")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a pickle at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    save_file({"transformer.blocks.0.weight": torch.zeros(2)}, tmp_path / "flux.safetensors")
    with pytest.raises(CheckpointError, match=r"flux\.safetensors: not a Stable Diffusion checkpoint.*transformer"):
        load_checkpoint(tmp_path / "flux.safetensors")
    controlnet = write_tiny_controlnet(tmp_path)
    with pytest.raises(CheckpointError, match="it is a ControlNet"):
        load_checkpoint(controlnet)
    tensors = {k: v for k, v in load_file(tmp_path / "good.safetensors").items() if "input_blocks.4." not in k}
    save_file(tensors, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match=r"partial\.safetensors: could not load its UNet"):
        load_checkpoint(tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_diffusers_folder_loads(folders):
    model, clip, vae = tiny_sd2("v_prediction")
    root = folders.models_dir / "checkpoints" / "tiny-diffusers"
    model.unet.save_pretrained(root / "unet")
    vae.vae.save_pretrained(root / "vae")
    clip.encoders[0].save_pretrained(root / "text_encoder")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler_config))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None]}))
    assert "tiny-diffusers" in folders.list("checkpoints")
    model2, clip2, vae2 = CheckpointLoaderSimple().run(ckpt_name="tiny-diffusers")
    assert model2.family == model.family
    assert torch.equal(unet_output(model), unet_output(model2))
    assert all(torch.equal(a, b) for a, b in zip(text_outputs(clip), text_outputs(clip2)))
    assert torch.equal(vae_decode(vae), vae_decode(vae2))
    # and it saves to the same single file as the model it came from
    a = load_file(write_tiny_checkpoint(folders.output_dir, "a.safetensors", (model, clip, vae)))
    b = load_file(write_tiny_checkpoint(folders.output_dir, "b.safetensors", (model2, clip2, vae2)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def controlnet_output(model):
    gen = torch.Generator().manual_seed(3)
    down, mid = model(torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([500]),
                      encoder_hidden_states=torch.randn(1, 5, model.config.cross_attention_dim, generator=gen),
                      controlnet_cond=torch.rand(1, 3, 64, 64, generator=gen), return_dict=False)
    return [*down, mid]


@pytest.mark.parametrize("family", [SD1, SD2])
def test_controlnet_files_load(folders, family):
    original = tiny_controlnet(family)
    name = install(folders, write_tiny_controlnet(folders.output_dir, f"cn-{family}.safetensors", family),
                   "controlnet")
    loaded = ControlNetLoader().run(control_net_name=name)[0]
    assert loaded.family.name == family
    assert same_weights(original.model, loaded.model)
    assert all(torch.equal(a, b) for a, b in zip(controlnet_output(original.model), controlnet_output(loaded.model)))
    # the same network in diffusers' own key layout, as some downloads come
    save_file(original.model.state_dict(), folders.output_dir / "diffusers-cn.safetensors")
    from_diffusers_keys = load_controlnet(folders.output_dir / "diffusers-cn.safetensors")
    assert from_diffusers_keys.family.name == family
    assert same_weights(original.model, from_diffusers_keys.model)


def test_controlnet_from_diffusers_keys_with_standard_shapes(tmp_path):
    model = tiny_sd1_standard()[0]
    net = ControlNetModel.from_unet(model.unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    save_file(net.state_dict(), tmp_path / "cn.safetensors")
    loaded = load_controlnet(tmp_path / "cn.safetensors").model
    assert same_weights(net, loaded)
    assert all(torch.equal(a, b) for a, b in zip(controlnet_output(net), controlnet_output(loaded)))


def test_vae_files_load(folders):
    # a full checkpoint in models/vae: its first_stage_model.* weights, with the recorded config
    vae = tiny_sd1()[2]
    install(folders, write_tiny_checkpoint(folders.output_dir, "full.safetensors"), "vae")
    loaded = VAELoader().run(vae_name="full.safetensors")[0]
    assert loaded.family.name == SD1 and loaded.scaling_factor == pytest.approx(0.18215)
    assert torch.equal(vae_decode(vae), vae_decode(loaded))

    # standalone files as downloaded: bare original keys, or diffusers keys (no recorded config)
    standard = tiny_sd1_standard()[2]
    ldm = vae_to_ldm(standard.vae.state_dict(), standard.vae.config)
    save_file({k: v.contiguous() for k, v in ldm.items()}, folders.output_dir / "sdxl_vae.safetensors")
    save_file(standard.vae.state_dict(), folders.output_dir / "diffusers_vae.safetensors")
    for name in ("sdxl_vae.safetensors", "diffusers_vae.safetensors"):
        assert torch.equal(vae_decode(standard), vae_decode(load_vae(folders.output_dir / name))), name
    xl = load_vae(folders.output_dir / "sdxl_vae.safetensors")  # same shapes as SD's: the name decides
    assert xl.family.name == SDXL and xl.scaling_factor == pytest.approx(0.13025)
    with pytest.raises(CheckpointError, match="not a VAE"):
        load_vae(write_tiny_controlnet(folders.output_dir))


@pytest.mark.parametrize("prefix", ["../evil", "checkpoints/../../evil", "/tmp/evil"])
def test_checkpoint_save_refuses_names_outside_the_output_folder(folders, prefix):
    assert "filename_prefix" in CheckpointSave.check(filename_prefix=prefix)
    model, clip, vae = tiny_sd1()
    with pytest.raises(UnsafePath):
        CheckpointSave().run(model=model, clip=clip, vae=vae, filename_prefix=prefix)
    assert not list(folders.output_dir.parent.rglob("evil*"))


def test_loader_nodes_declare_comfyui_interfaces():
    info = CheckpointLoaderSimple.object_info("CheckpointLoaderSimple")
    assert info["output"] == ["MODEL", "CLIP", "VAE"] and list(info["input"]["required"]) == ["ckpt_name"]
    assert VAELoader.object_info("VAELoader")["output"] == ["VAE"]
    assert list(ControlNetLoader.object_info("ControlNetLoader")["input"]["required"]) == ["control_net_name"]
    save = CheckpointSave.object_info("CheckpointSave")
    assert list(save["input"]["required"]) == ["model", "clip", "vae", "filename_prefix"]
    assert save["input"]["required"]["filename_prefix"][1]["default"] == "checkpoints/ComfyUI"
    assert save["output_node"] is True and save["output"] == []


def test_model_cache_reuses_and_evicts(tmp_path):
    a = write_tiny_checkpoint(tmp_path, "a.safetensors")
    b = write_tiny_checkpoint(tmp_path, "b.safetensors")
    loads = []

    def loader(path):
        return lambda: loads.append(path.name) or load_checkpoint(path)

    one_model = model_cache.weight_bytes(load_checkpoint(a))
    cache = model_cache.ModelCache(budget_bytes=int(one_model * 1.5))
    first = cache.get_or_load(a, loader(a))
    assert cache.get_or_load(a, loader(a)) is first and loads == ["a.safetensors"]
    cache.get_or_load(b, loader(b))
    assert len(cache) == 1 and cache.used_bytes == one_model  # a was evicted to stay in budget
    cache.get_or_load(a, loader(a))
    assert loads == ["a.safetensors", "b.safetensors", "a.safetensors"]
    write_tiny_checkpoint(tmp_path, "a.safetensors", tiny_sd1(seed=1))  # replaced under the same name
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    reloaded = cache.get_or_load(a, loader(a))
    assert loads[-1] == "a.safetensors" and len(loads) == 4
    assert not same_weights(first[0].unet, reloaded[0].unet)


def test_device_defaults_and_attention_on_cpu():
    if not torch.cuda.is_available():
        assert devices.default_dtype("cpu") == torch.float32
    assert devices.default_dtype("cuda") == torch.float16
    assert devices.vae_dtype(torch.float16, force_upcast=True) == torch.float32
    unet = tiny_sd1()[0].unet
    assert devices.set_attention(unet) == "sdpa"
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}


@pytest.mark.slow
def test_full_size_sd15_single_file_load(tmp_path):
    """A full-size SD1.5-shaped file (random fp16 weights, as the common pruned downloads) loads
    through the single-file path; peak memory is measured in a fresh process."""
    import subprocess
    import sys
    import textwrap
    import time

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
    from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
    from inkwash.nodes.runtime.model_types import DiffusionModel, Family, TextEncoder, Vae
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    folder, family = CONFIG_ROOT / "sd15", Family(SD1)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_config(folder, "unet")).half()
    vae = AutoencoderKL.from_config(read_config(folder, "vae")).half()
    text = CLIPTextModel(CLIPTextConfig.from_dict(read_config(folder, "text_encoder"))).half()
    sums = {"unet": sum(p.double().sum().item() for p in unet.parameters()),
            "clip": sum(p.double().sum().item() for p in text.parameters())}
    path = tmp_path / "sd15-random.safetensors"
    start = time.perf_counter()
    save_checkpoint(path, DiffusionModel(unet, family, read_config(folder, "scheduler")),
                    TextEncoder([clip_tokenizer()], [text], family), Vae(vae, family))
    save_s = time.perf_counter() - start
    del unet, vae, text

    script = textwrap.dedent(f"""
        import json, resource, time, torch, psutil
        from inkwash.nodes.runtime.checkpoint_load import load_checkpoint
        before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        model, clip, vae = load_checkpoint({str(path)!r}, device="cpu", dtype=torch.float32)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"seconds": seconds, "rss_before": before, "peak": peak,
            "family": model.family.name, "dtype": str(next(model.unet.parameters()).dtype),
            "unet": sum(p.double().sum().item() for p in model.unet.parameters()),
            "clip": sum(p.double().sum().item() for p in clip.encoders[0].parameters()),
            "params": sum(p.numel() for m in (model.unet, clip.encoders[0], vae.vae) for p in m.parameters())}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    weights_gb = result["params"] * 4 / 1e9
    print(f"\nfull-size SD1.5: file {path.stat().st_size / 1e9:.2f} GB fp16, saved in {save_s:.1f} s; "
          f"loaded as fp32 ({weights_gb:.2f} GB of weights) in {result['seconds']:.1f} s; "
          f"RSS after imports {result['rss_before'] / 1e9:.2f} GB, peak {result['peak'] / 1e9:.2f} GB")
    assert result["family"] == SD1 and result["dtype"] == "torch.float32"
    assert result["unet"] == pytest.approx(sums["unet"]) and result["clip"] == pytest.approx(sums["clip"])
    # weights held once: peak stays well under two copies of the fp32 weights
    assert result["peak"] - result["rss_before"] < 1.5 * weights_gb * 1e9
