"""Model-level core nodes on tiny models: tiled VAE, model and CLIP merging, difference and SDXL ControlNets."""
import json

import pytest
import torch
from diffusers import ControlNetModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from inkwash.nodes.core import controlnet, loaders, model_merge, vae
from inkwash.nodes.runtime import control, latents, lora, sampling, text_encode, vae_codec
from inkwash.nodes.runtime.checkpoint_load import load_controlnet
from inkwash.nodes.runtime.checkpoint_save import save_controlnet
from inkwash.nodes.runtime.model_types import SDXL, ControlNet, Family
from inkwash.nodes.runtime.state_dict_files import CheckpointError
from tiny_models import tiny_controlnet, tiny_sd1, tiny_sd2, tiny_sdxl


@pytest.fixture(scope="module")
def sd1(one_thread):
    return tiny_sd1()


def unet_output(model, seed=0):
    torch.manual_seed(seed)
    x, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, model.unet.config.cross_attention_dim)
    with torch.no_grad(), lora.applied(model):
        return model.unet(x, torch.tensor([500]), encoder_hidden_states=context).sample


# -- tiled VAE ----------------------------------------------------------------------------------------------

def test_vae_decode_tiled_matches_a_whole_decode(sd1):
    _, _, tiny_vae = sd1
    torch.manual_seed(0)
    samples = torch.randn(2, 4, 24, 24)
    whole = vae_codec.decode(tiny_vae, samples)
    (one_tile,) = vae.VAEDecodeTiled().run({"samples": samples}, tiny_vae, tile_size=256, overlap=64,
                                           temporal_size=64, temporal_overlap=8)
    assert torch.allclose(one_tile, whole, atol=1e-5)  # a tile larger than the image: the whole decode
    errors = []
    for overlap in (0, 16, 32):
        (tiled,) = vae.VAEDecodeTiled().run({"samples": samples}, tiny_vae, tile_size=128, overlap=overlap,
                                            temporal_size=64, temporal_overlap=8)
        assert tiled.shape == whole.shape == (2, 192, 192, 3)
        errors.append((tiled - whole).abs().mean().item())
    # blending across the overlap brings the tiles closer to the whole decode (a random tiny VAE's
    # GroupNorm statistics differ per tile, so never equal)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03, errors


def test_vae_encode_tiled_matches_a_whole_encode(sd1):
    _, _, tiny_vae = sd1
    torch.manual_seed(1)
    pixels = torch.rand(1, 196, 190, 3)  # not multiples of 8: center-cropped like VAEEncode
    whole = vae_codec.encode(tiny_vae, pixels)
    (tiled,) = vae.VAEEncodeTiled().run(pixels, tiny_vae, tile_size=128, overlap=32, temporal_size=64,
                                        temporal_overlap=8)
    assert tiled["samples"].shape == whole.shape == (1, 4, 24, 23)
    error = (tiled["samples"] - whole).abs().mean() / whole.abs().mean()
    assert error < 0.5, error
    (one_tile,) = vae.VAEEncodeTiled().run(pixels, tiny_vae, tile_size=512, overlap=64, temporal_size=64,
                                           temporal_overlap=8)
    assert torch.allclose(one_tile["samples"], whole, atol=1e-5)
    # the shared VAE is left as it was
    assert tiny_vae.vae.tile_sample_min_size != 128


def test_vae_tiled_declarations_match_comfyui():
    info = vae.VAEDecodeTiled.object_info("VAEDecodeTiled")
    assert info["input_order"]["required"] == ["samples", "vae", "tile_size", "overlap", "temporal_size",
                                               "temporal_overlap"]
    required = info["input"]["required"]
    assert {k: v for k, v in required["tile_size"][1].items()} == {"default": 512, "min": 64, "max": 4096, "step": 32}
    assert required["overlap"][1] == {"default": 64, "min": 0, "max": 4096, "step": 32}
    assert required["temporal_size"][1]["default"] == 64 and required["temporal_overlap"][1]["min"] == 4
    encode = vae.VAEEncodeTiled.object_info("VAEEncodeTiled")
    assert encode["input_order"]["required"][:2] == ["pixels", "vae"]
    assert encode["input"]["required"]["tile_size"][1]["step"] == 64 and encode["output"] == ["LATENT"]


# -- merging ------------------------------------------------------------------------------------------------

def test_model_merge_simple_weights_and_restores(one_thread):
    first, second = tiny_sd1(seed=0)[0], tiny_sd1(seed=1)[0]
    (same,) = model_merge.ModelMergeSimple().run(first, second, 1.0)
    assert same is first
    (other,) = model_merge.ModelMergeSimple().run(first, second, 0.0)
    assert torch.allclose(unet_output(other), unet_output(second), atol=1e-5)
    (half,) = model_merge.ModelMergeSimple().run(first, second, 0.5)
    name = "down_blocks.0.resnets.0.conv1.weight"
    original = first.unet.get_parameter(name).detach().clone()
    with lora.applied(half):
        merged = half.unet.get_parameter(name).detach().clone()
    expected = (original + second.unet.get_parameter(name)) / 2
    assert torch.allclose(merged, expected, atol=1e-6)
    assert torch.equal(first.unet.get_parameter(name), original)  # model1 unchanged after the run
    # a LoRA-like patch model1 already had stays
    (stacked,) = model_merge.ModelMergeSimple().run(half, second, 0.5)
    assert len(stacked.lora_patches) == 2 * len(half.lora_patches)


def test_model_merge_refuses_other_families(one_thread):
    with pytest.raises(ValueError, match="ModelMergeSimple: model1 is sd1.*model2 sd2"):
        model_merge.ModelMergeSimple().run(tiny_sd1()[0], tiny_sd2()[0], 0.5)


def test_clip_merge_simple(one_thread):
    first, second = tiny_sd1(seed=0)[1], tiny_sd1(seed=1)[1]
    (other,) = model_merge.CLIPMergeSimple().run(first, second, 0.0)
    encoded = text_encode.encode(other, "a red fox")[0].embeds
    assert torch.allclose(encoded, text_encode.encode(second, "a red fox")[0].embeds, atol=1e-5)
    assert not torch.allclose(encoded, text_encode.encode(first, "a red fox")[0].embeds, atol=1e-3)
    (half,) = model_merge.CLIPMergeSimple().run(first, second, 0.5)
    assert not any(p.weight.endswith("position_ids") for p in half.lora_patches)
    with pytest.raises(ValueError, match="text encoders"):
        model_merge.CLIPMergeSimple().run(first, tiny_sdxl()[1], 0.5)


# -- difference ControlNets ---------------------------------------------------------------------------------

def write_difference_controlnet(folder, model):
    """A ControlNet stored as its change from `model`'s UNet, with the `difference` marker."""
    full = tiny_controlnet()
    difference = ControlNetModel.from_config(full.model.config)
    unet = dict(model.unet.named_parameters())
    with torch.no_grad():
        for name, param in difference.named_parameters():
            own = full.model.get_parameter(name)
            param.copy_(own - unet[name] if name in unet and unet[name].shape == own.shape else own)
    path = save_controlnet(folder / "diff.safetensors", ControlNet(difference, Family("sd1")))
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(str(path))
    tensors["difference"] = torch.tensor([])
    save_file(tensors, str(path), metadata=metadata)
    return full


def test_diff_controlnet_loader_adds_the_model_weights(folders, sd1, fresh_model_cache):
    model = sd1[0]
    folder = folders.models_dir / "controlnet"
    folder.mkdir(parents=True)
    full = write_difference_controlnet(folder, model)
    (loaded,) = controlnet.DiffControlNetLoader().run(model, "diff.safetensors")
    for name, param in full.model.named_parameters():
        assert torch.allclose(loaded.model.get_parameter(name), param, atol=1e-5), name
    with pytest.raises(CheckpointError, match="difference ControlNet.*DiffControlNetLoader"):
        loaders.ControlNetLoader().run("diff.safetensors")
    # an ordinary ControlNet loads as ControlNetLoader loads it
    save_controlnet(folder / "plain.safetensors", full)
    (plain,) = controlnet.DiffControlNetLoader().run(model, "plain.safetensors")
    assert torch.equal(plain.model.controlnet_mid_block.weight, full.model.controlnet_mid_block.weight)
    with pytest.raises(CheckpointError, match="another model family"):
        load_controlnet(folder / "diff.safetensors", "cpu", torch.float32, base=tiny_sdxl()[0])


# -- SDXL ControlNets ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdxl(one_thread):
    return tiny_sdxl()


def test_sdxl_controlnet_loads_from_original_and_diffusers_layouts(tmp_path, sdxl):
    original = tiny_controlnet(SDXL)
    path = save_controlnet(tmp_path / "cn-xl.safetensors", original)
    assert any(k.startswith("control_model.label_emb.") for k in load_file(str(path)))
    loaded = load_controlnet(path, "cpu", torch.float32)
    assert loaded.family.name == SDXL and loaded.model.config.addition_embed_type == "text_time"
    for name, param in original.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], param), name

    # diffusers' own layout, as most SDXL ControlNets are shared, with the config recorded
    diffusers_file = tmp_path / "cn-xl-diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in original.model.state_dict().items()}, str(diffusers_file),
              metadata={"inkwash.configs": json.dumps({"controlnet": {
                  k: v for k, v in dict(original.model.config).items() if not k.startswith("_")}})})
    again = load_controlnet(diffusers_file, "cpu", torch.float32)
    assert again.family.name == SDXL
    assert torch.equal(again.model.add_embedding.linear_1.weight, original.model.add_embedding.linear_1.weight)


def test_sdxl_controlnet_guides_sdxl_sampling_and_refuses_sd1(tmp_path, sdxl):
    model, clip, _ = sdxl
    loaded = load_controlnet(save_controlnet(tmp_path / "cn.safetensors", tiny_controlnet(SDXL)), "cpu",
                             torch.float32)
    positive, negative = text_encode.encode(clip, "a lighthouse"), text_encode.encode(clip, "")
    image = torch.rand(1, 32, 32, 3)

    def run(pos, neg):
        return sampling.sample(model, pos, neg, latents.empty(32, 32, 1), seed=3, steps=3, cfg=5.0,
                               sampler_name="euler", scheduler="normal")["samples"]

    guided = run(*control.apply(positive, negative, loaded, image, 1.0))
    assert torch.isfinite(guided).all() and not torch.allclose(guided, run(positive, negative), atol=1e-4)
    with pytest.raises(ValueError, match="sd1 ControlNet and does not fit this model"):
        run(*control.apply(positive, negative, tiny_controlnet(), image, 1.0))


# -- hypernetworks ------------------------------------------------------------------------------------------

def write_hypernetwork(path, dims=(32, 64), activation="relu", layer_norm=False, seed=0):
    """An AUTOMATIC1111-format hypernetwork: per context width, two MLPs (keys, values) of shape 1-2-1."""
    torch.manual_seed(seed)
    data = {"activation_func": activation, "is_layer_norm": layer_norm, "layer_structure": [1, 2, 1],
            "use_dropout": False, "activate_output": False, "name": "tiny", "step": 10}
    for dim in dims:
        pair = []
        for _ in range(2):
            state = {"linear.0.weight": torch.randn(dim * 2, dim) * 0.1, "linear.0.bias": torch.randn(dim * 2) * 0.1}
            if layer_norm:
                state |= {"linear.2.weight": torch.ones(dim * 2), "linear.2.bias": torch.zeros(dim * 2)}
            state |= {"linear.3.weight": torch.randn(dim, dim * 2) * 0.1, "linear.3.bias": torch.randn(dim) * 0.1}
            if layer_norm:  # A1111 puts a LayerNorm after every linear
                state |= {"linear.4.weight": torch.full((dim,), 2.0), "linear.4.bias": torch.zeros(dim)}
            pair.append(state)
        data[dim] = pair
    torch.save(data, path)
    return data


def test_hypernetwork_loader_shifts_keys_and_values_while_sampling(folders, sd1):
    from inkwash.nodes.core.hypernetwork import HypernetworkLoader

    model = sd1[0]
    folder = folders.models_dir / "hypernetworks"
    folder.mkdir(parents=True)
    data = write_hypernetwork(folder / "tiny.pt")
    (patched,) = HypernetworkLoader().run(model, "tiny.pt", 0.5)
    assert patched.unet is model.unet and model.lora_patches == ()
    base = unet_output(model)
    changed = unet_output(patched)
    assert not torch.allclose(changed, base, atol=1e-4)
    assert torch.equal(unet_output(model), base)  # removed after the run

    # inside a run: to_k(x) is W_k(x + 0.5 * mlp_k(x)), mlp_k = linear, relu, linear
    attention = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    x = torch.randn(1, 5, 32)
    state = data[32][0]
    mlp = torch.relu(x @ state["linear.0.weight"].T + state["linear.0.bias"]) @ state["linear.3.weight"].T \
        + state["linear.3.bias"]
    with torch.no_grad(), lora.applied(patched):
        assert torch.allclose(attention.to_k(x), attention.to_k.projection(x + 0.5 * mlp), atol=1e-6)
    assert isinstance(attention.to_k, torch.nn.Linear)

    (zero,) = HypernetworkLoader().run(model, "tiny.pt", 0.0)
    assert zero is model
    latent = latents.empty(32, 32, 1)
    positive, negative = text_encode.encode(sd1[1], "a fox"), text_encode.encode(sd1[1], "")
    run = lambda m: sampling.sample(m, positive, negative, latent, seed=1, steps=2, cfg=5.0,  # noqa: E731
                                    sampler_name="euler", scheduler="normal")["samples"]
    assert not torch.allclose(run(patched), run(model), atol=1e-4)


def test_hypernetwork_errors_name_the_file(folders, sd1):
    from inkwash.nodes.core.hypernetwork import HypernetworkLoader
    from inkwash.nodes.runtime.hypernetwork import HypernetworkError

    folder = folders.models_dir / "hypernetworks"
    folder.mkdir(parents=True)
    write_hypernetwork(folder / "xl.pt", dims=(768, 1280))
    with pytest.raises(HypernetworkError, match="xl.pt: its layers are for context widths"):
        HypernetworkLoader().run(sd1[0], "xl.pt", 1.0)
    (folder / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(HypernetworkError, match="broken.pt: not a readable hypernetwork"):
        HypernetworkLoader().run(sd1[0], "broken.pt", 1.0)
    write_hypernetwork(folder / "odd.pt", activation="gelu-ish")
    with pytest.raises(HypernetworkError, match="activation 'gelu-ish'"):
        HypernetworkLoader().run(sd1[0], "odd.pt", 1.0)
    write_hypernetwork(folder / "norm.pt", layer_norm=True)
    (with_norm,) = HypernetworkLoader().run(sd1[0], "norm.pt", 1.0)
    assert not torch.allclose(unet_output(with_norm), unet_output(sd1[0]), atol=1e-4)


def test_sdxl_controlnet_sampling_matches_diffusers_pipeline(tmp_path, sdxl):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

    from inkwash.nodes.runtime import noise, sigmas

    model, clip, tiny_vae = sdxl
    net = load_controlnet(save_controlnet(tmp_path / "cn.safetensors", tiny_controlnet(SDXL)), "cpu", torch.float32)
    prompt, negative_prompt = "a photo of a cat in the snow", "blurry"
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    positive, negative = control.apply(text_encode.encode(clip, prompt), text_encode.encode(clip, negative_prompt),
                                       net, hint, 0.7, 0.0, 0.5)
    # ComfyUI's "simple" schedule walks the trained timesteps as diffusers' "trailing" spacing does
    ours = sampling.sample(model, positive, negative, {"samples": torch.zeros(1, 4, 8, 8)}, 7, 4, 5.0, "euler",
                           "simple")["samples"]
    sigma_max = sigmas.DiscreteSchedule(model.scheduler_config).sigma_max
    start = noise.batch_noise(7, (1, 4, 8, 8)) * (1 + sigma_max ** 2) ** 0.5 / sigma_max  # ComfyUI's start scale
    pipe = StableDiffusionXLControlNetPipeline(
        vae=tiny_vae.vae, text_encoder=clip.encoders[0], text_encoder_2=clip.encoders[1], tokenizer=clip.tokenizers[0],
        tokenizer_2=clip.tokenizers[1], unet=model.unet, controlnet=net.model,
        scheduler=EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt, negative_prompt=negative_prompt, image=hint.movedim(-1, 1), height=64, width=64,
                  num_inference_steps=4, guidance_scale=5.0, latents=start,
                  controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.5,
                  output_type="latent").images
    # diffusers derives its sigmas from float32 alphas, ComfyUI (and Inkwash) from float64 betas
    assert (ours - theirs).abs().max() < 1e-3 * theirs.abs().max()


def test_control_lora_files_are_refused_clearly(tmp_path):
    path = save_controlnet(tmp_path / "control-lora.safetensors", tiny_controlnet())
    tensors = load_file(str(path))
    tensors["lora_controlnet"] = torch.tensor([])
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="Control-LoRA"):
        load_controlnet(path, "cpu", torch.float32)
