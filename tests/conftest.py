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
