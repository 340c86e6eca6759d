"""Where models, inputs and outputs live. Imports no torch.

Model folders are named as ComfyUI's (checkpoints, vae, loras, controlnet, ...). An
`extra_model_paths.yaml` in ComfyUI's format adds the folders of an existing A1111 or ComfyUI install.
Every file name that comes from a user goes through `safe_path`, which resolves symlinks before
checking that the result stays inside its folder.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
MODEL_KINDS = ("checkpoints", "vae", "loras", "controlnet", "embeddings", "upscale_models", "annotators",
               "clip", "unet", "diffusers", "vae_approx", "hypernetworks", "clip_vision")
# ComfyUI accepts a few legacy folder names for the same kind.
KIND_ALIASES = {"t2i_adapter": "controlnet", "text_encoders": "clip", "diffusion_models": "unet", "lora": "loras"}


class UnsafePath(ValueError):
    """A user-given file name that would leave its folder."""


MAX_NAME_BYTES = 255  # what file systems allow in one name


def named_path(base: Path, name: str) -> Path:
    """`base/name` for a name that stays inside `base` as written (relative, no '..'), symlinks left as
    they are: model folders may hold links to models on another disk (the user put them there); only
    the name a request gives is contained. UnsafePath otherwise."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"invalid model name {name!r}")
    parts = Path(name).parts
    if os.path.isabs(name) or ":" in parts[0] or ".." in parts:
        raise UnsafePath(f"model name {name!r} leaves its folder")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        raise UnsafePath(f"model name {name[:60]!r}... is too long")
    return Path(base) / name


def safe_path(base: Path, name: str) -> Path:
    """`base/name`, refused when it leaves `base` (absolute names, `..`, symlinks pointing out)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath(f"invalid file name {name!r}")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ":" in Path(name).parts[0]:
        raise UnsafePath(f"file name {name!r} must be relative")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES * 4 or any(
            len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in Path(name).parts):
        raise UnsafePath(f"file name {name[:60]!r}... is too long (at most {MAX_NAME_BYTES} bytes a part)")
    base_resolved = base.resolve()
    target = (base_resolved / name).resolve()
    if target != base_resolved and base_resolved not in target.parents:
        raise UnsafePath(f"file name {name!r} leaves its folder")
    return target


TEMP_MARK = ".inkwash-temp"  # in a temp folder Inkwash made: only such a folder is ever emptied


def fresh_temp_dir(path: Path) -> None:
    """Make `path` an empty temp folder: the previews and temp uploads of an earlier run are deleted,
    but only from a folder Inkwash made (one holding TEMP_MARK); another folder is left as it is."""
    path = Path(path)
    if path.is_dir() and (path / TEMP_MARK).is_file():
        for entry in path.iterdir():
            if entry.name == TEMP_MARK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    elif not path.exists() or (path.is_dir() and not any(path.iterdir())):
        path.mkdir(parents=True, exist_ok=True)
        (path / TEMP_MARK).write_text("Inkwash's temp folder: emptied each time the server starts.\n")


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temporary file beside it and a rename: readers, and a
    process killed halfway, see the old file or the whole new one, never part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@dataclass
class Folders:
    models_dir: Path = REPO_ROOT / "models"
    output_dir: Path = REPO_ROOT / "output"
    input_dir: Path = REPO_ROOT / "input"
    temp_dir: Path = REPO_ROOT / "temp"
    extra: dict[str, list[Path]] = field(default_factory=dict)
    install_dirs: list[Path] = field(default_factory=list)  # extra_model_paths' base_paths (their styles.csv)

    def model_dirs(self, kind: str) -> list[Path]:
        kind = KIND_ALIASES.get(kind, kind)
        return [Path(self.models_dir) / kind, *self.extra.get(kind, [])]

    def list(self, kind: str) -> list[str]:
        """Model names in a kind's folders, as paths relative to the folder (subfolders included).
        A diffusers-format folder (one with model_index.json or config.json) counts as one model."""
        names: set[str] = set()
        for root in self.model_dirs(kind):
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                here = Path(dirpath)
                if here != root and ({"model_index.json", "config.json"} & set(filenames)):
                    names.add(here.relative_to(root).as_posix())
                    dirnames.clear()
                    continue
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in filenames:
                    if filename.lower().endswith(MODEL_EXTENSIONS):
                        names.add((here / filename).relative_to(root).as_posix())
        return sorted(names)

    def find(self, kind: str, name: str) -> Path:
        """The file (or diffusers folder) for a model name, or a FileNotFoundError naming where we looked."""
        looked = []
        for root in self.model_dirs(kind):
            path = named_path(root, name)
            if path.exists():  # through symlinks the user put in the folder, as list() shows them
                return path
            looked.append(str(root))
        raise FileNotFoundError(f"{kind} model {name!r} not found in {', '.join(looked)}")

    def load_extra_model_paths(self, yaml_file: str | Path) -> None:
        """Add folders from a ComfyUI `extra_model_paths.yaml` (sections with base_path + kind: paths)."""
        yaml_file = Path(yaml_file)
        data = yaml.safe_load(yaml_file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{yaml_file}: expected sections of folder paths")
        for section in data.values():
            if not isinstance(section, dict):
                continue
            base = Path(os.path.expanduser(str(section.get("base_path", ""))))
            if not base.is_absolute():
                base = yaml_file.parent / base
            if section.get("base_path"):
                self.install_dirs.append(base)
            for kind, value in section.items():
                if kind in ("base_path", "is_default") or not isinstance(value, str):
                    continue
                kind = KIND_ALIASES.get(kind, kind)
                for line in value.splitlines():
                    if line.strip():
                        self.extra.setdefault(kind, []).append(base / os.path.expanduser(line.strip()))


_current = Folders()


def current() -> Folders:
    """The folders this process serves from (set once at start-up by the CLI or a test)."""
    return _current


def configure(models_dir: str | Path | None = None, output_dir: str | Path | None = None,
              input_dir: str | Path | None = None, temp_dir: str | Path | None = None,
              extra_model_paths: str | Path | None = None) -> Folders:
    global _current
    folders = Folders()
    if models_dir is not None:
        folders.models_dir = Path(models_dir)
    if output_dir is not None:
        folders.output_dir = Path(output_dir)
    if input_dir is not None:
        folders.input_dir = Path(input_dir)
    if temp_dir is not None:
        folders.temp_dir = Path(temp_dir)
    default_yaml = REPO_ROOT / "extra_model_paths.yaml"
    if extra_model_paths is not None:
        folders.load_extra_model_paths(extra_model_paths)
    elif default_yaml.is_file():
        folders.load_extra_model_paths(default_yaml)
    _current = folders
    return folders
