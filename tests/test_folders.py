"""Model folders, extra_model_paths.yaml and file-name safety."""
import os

import pytest

from inkwash.nodes.folders import Folders, UnsafePath, safe_path


def test_lists_models_with_subfolders_and_diffusers_folders(tmp_path):
    root = tmp_path / "models" / "checkpoints"
    (root / "sd15").mkdir(parents=True)
    (root / "a.safetensors").write_bytes(b"x")
    (root / "sd15" / "b.ckpt").write_bytes(b"x")
    (root / "notes.txt").write_text("not a model")
    (root / "my-diffusers").mkdir()
    (root / "my-diffusers" / "model_index.json").write_text("{}")
    (root / "my-diffusers" / "unet").mkdir()
    (root / "my-diffusers" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    folders = Folders(models_dir=tmp_path / "models")
    assert folders.list("checkpoints") == ["a.safetensors", "my-diffusers", "sd15/b.ckpt"]
    assert folders.find("checkpoints", "sd15/b.ckpt") == (root / "sd15" / "b.ckpt").resolve()
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        folders.find("checkpoints", "missing.safetensors")


def test_extra_model_paths_yaml_adds_an_a1111_install(tmp_path):
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    (a1111 / "models" / "Stable-diffusion" / "dream.safetensors").write_bytes(b"x")
    (a1111 / "models" / "Lora").mkdir(parents=True)
    (a1111 / "models" / "Lora" / "style.safetensors").write_bytes(b"x")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"a111:\n  base_path: {a1111}\n  checkpoints: models/Stable-diffusion\n"
                         "  loras: |\n    models/Lora\n    models/LyCORIS\n")
    folders = Folders(models_dir=tmp_path / "models")
    folders.load_extra_model_paths(yaml_file)
    assert folders.list("checkpoints") == ["dream.safetensors"]
    assert folders.list("loras") == ["style.safetensors"]
    assert folders.find("checkpoints", "dream.safetensors").parent.name == "Stable-diffusion"


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "a/../../x", "", "a\x00b", "C:/x"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafePath):
        safe_path(tmp_path, name)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    base = tmp_path / "input"
    base.mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    os.symlink(outside, base / "link.png")
    with pytest.raises(UnsafePath):
        safe_path(base, "link.png")
    (base / "ok.png").write_bytes(b"x")
    assert safe_path(base, "ok.png") == (base / "ok.png").resolve()
