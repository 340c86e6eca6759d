"""A wheel built from the repo, installed in a fresh virtual environment (which borrows the test
environment's dependencies, not its editable Inkwash), serves the app and runs the shipped txt2img
workflow on the bundled demo model. (About 55 s on two busy cores: in the normal suite.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from browser_app import free_port

REPO = Path(__file__).resolve().parent.parent
NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "build", "*.egg-info", "tests", "bench",
                                     "docs", "output", "input", "temp", "data", ".pytest_cache")



def run(command: list, **options) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **options)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the fresh environment's bin folder, the environment variables to run it with)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SHIPPED)  # build from a copy: nothing written in the repo
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         str(source), "-w", str(root / "dist")])
    wheel, = (root / "dist").glob("inkwash-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    # Then the dependencies: the test environment's packages, after the wheel's on the path. Its
    # editable Inkwash is not picked up (a .pth file's path is added without its own .pth files).
    site_packages = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site_packages / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    where = run([str(python), "-c", "import inkwash.webui.tabs, inkwash; print(inkwash.__file__)"], env=env, cwd=root)
    assert Path(where.stdout.strip()).is_relative_to(site_packages), where.stdout
    return venv / "bin", env


def test_the_wheel_runs_the_shipped_txt2img_workflow(installed, tmp_path):
    bin_dir, env = installed
    package = Path(run([str(bin_dir / "python"), "-c", "import inkwash; print(inkwash.__file__)"], env=env).stdout.strip()).parent
    workflow = package / "workflows" / "txt2img.json"
    assert workflow.is_file()
    output = tmp_path / "output"
    run([str(bin_dir / "inkwash"), "run", str(workflow), "--set", "3.steps=2", "--set", "5.width=64",
         "--set", "5.height=64", "--output-dir", str(output), "--input-dir", str(tmp_path / "input")],
        env=env, cwd=tmp_path, timeout=300)
    images = list(output.rglob("*.png"))
    assert len(images) == 1
    from PIL import Image
    with Image.open(images[0]) as image:
        assert image.size == (64, 64) and "Model: inkwash-demo" in image.info["parameters"]


def test_the_wheel_serves_the_app(installed, tmp_path):
    bin_dir, env = installed
    port = free_port()
    server = subprocess.Popen(
        [str(bin_dir / "inkwash"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--output-dir", str(tmp_path / "output"), "--input-dir", str(tmp_path / "input")],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        page = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(1)
        assert page is not None, f"the server did not answer: {server.poll()}"
        assert page.status_code == 200 and "gradio" in page.text.lower()
        models = httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=30).json()
        assert "inkwash-demo.safetensors" in [model["model_name"] + ".safetensors" for model in models]
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert page is not None, output
