"""Symlinked model files and folders (models kept on another disk): listed, validated and loaded alike;
only names given by a request are contained."""
import pytest

from inkwash.nodes import graph
from inkwash.nodes.folders import UnsafePath


@pytest.fixture
def linked(folders, checkpoint, tmp_path):
    """The tiny checkpoint moved to another 'disk', linked back as a file and through a linked folder."""
    elsewhere = tmp_path / "other-disk"
    (elsewhere / "sd").mkdir(parents=True)
    moved = elsewhere / "sd" / "moved.safetensors"
    checkpoint.rename(moved)
    checkpoints = folders.models_dir / "checkpoints"
    (checkpoints / "linked.safetensors").symlink_to(moved)
    (checkpoints / "disk").symlink_to(elsewhere / "sd", target_is_directory=True)
    return folders


def test_listing_and_loading_agree_on_symlinks(linked):
    names = linked.list("checkpoints")
    assert names == ["disk/moved.safetensors", "linked.safetensors"]
    for name in names:
        assert linked.find("checkpoints", name).resolve().name == "moved.safetensors"


@pytest.mark.parametrize("name", ["../linked.safetensors", "/etc/passwd", "disk/../../x.safetensors", "a\\b"])
def test_request_names_are_still_contained(linked, name):
    with pytest.raises(UnsafePath):
        linked.find("checkpoints", name)


def test_a_symlinked_checkpoint_validates_and_loads(linked, registry):
    from inkwash.nodes.core.loaders import CheckpointLoaderSimple

    workflow = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "disk/moved.safetensors"}},
                "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
                "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}}
    assert graph.validate(workflow, registry).ok
    model, clip, vae = CheckpointLoaderSimple().run(ckpt_name="linked.safetensors")
    assert vae is not None and clip is not None and model is not None
