import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_models and other test helpers


@pytest.fixture
def folders(tmp_path):
    """Model, input and output folders of their own for one test."""
    from inkwash.nodes import folders as folders_module

    previous = folders_module.current()
    configured = folders_module.configure(models_dir=tmp_path / "models", output_dir=tmp_path / "output",
                                          input_dir=tmp_path / "input", temp_dir=tmp_path / "temp")
    for path in (configured.models_dir, configured.output_dir, configured.input_dir, configured.temp_dir):
        path.mkdir(parents=True, exist_ok=True)
    yield configured
    folders_module._current = previous


@pytest.fixture
def hasher(tmp_path):
    """A process-wide model hasher of its own for one test, its cache in tmp_path/data/hashes.json."""
    from inkwash.nodes.formats import file_hashes

    previous = file_hashes.current()
    configured = file_hashes.configure(tmp_path / "data" / file_hashes.CACHE_FILE)
    yield configured
    configured.stop()
    file_hashes._current = previous


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and two OpenMP threads on two shared cores can crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_model_cache():
    """An empty shared model cache before and after the test."""
    from inkwash.nodes.runtime import model_cache

    model_cache.shared().clear()
    yield
    model_cache.shared().clear()


TINY_CKPT = "tiny-sd1.safetensors"


@pytest.fixture(scope="module")
def registry():
    """The core nodes."""
    from inkwash.nodes.registry import core_nodes

    return core_nodes()


@pytest.fixture
def checkpoint(folders):
    """A tiny SD1-shaped checkpoint, TINY_CKPT, in this test's checkpoints folder."""
    from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
    from tiny_models import tiny_sd1

    path = folders.models_dir / "checkpoints" / TINY_CKPT
    path.parent.mkdir(parents=True)
    save_checkpoint(path, *tiny_sd1())
    return path
