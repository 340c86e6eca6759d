"""Temp files: under the data folder (or --temp-dir), emptied at start, never shared between instances."""
from fastapi.testclient import TestClient

from inkwash.nodes import folders as folders_module
from inkwash.webui.serve_options import ServeOptions, resolve
from inkwash.webui.server import create_app, create_context
from test_security import serve_args


def options_for(root, **kwargs) -> ServeOptions:
    for name in ("models", "output", "input"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return ServeOptions(models_dir=root / "models", output_dir=root / "output", input_dir=root / "input",
                        data_dir=root / "data", **kwargs)


def test_temp_lives_in_the_data_folder_and_is_emptied_at_start(tmp_path):
    previous = folders_module.current()
    try:
        options = options_for(tmp_path)
        ctx = create_context(options)
        assert ctx.folders.temp_dir == tmp_path / "data" / "temp"
        (ctx.folders.temp_dir / "preview_00001_.png").write_bytes(b"old preview")
        (ctx.folders.temp_dir / "sub").mkdir()
        (ctx.folders.temp_dir / "sub" / "x.png").write_bytes(b"old")
        ctx = create_context(options)  # a restart
        assert [p.name for p in ctx.folders.temp_dir.iterdir()] == [folders_module.TEMP_MARK]
    finally:
        folders_module._current = previous


def test_a_temp_dir_that_inkwash_did_not_make_is_never_emptied(tmp_path):
    previous = folders_module.current()
    try:
        mine = tmp_path / "my-files"
        mine.mkdir()
        (mine / "thesis.txt").write_text("keep me")
        ctx = create_context(options_for(tmp_path, temp_dir=mine))
        assert ctx.folders.temp_dir == mine and (mine / "thesis.txt").read_text() == "keep me"
        assert resolve(serve_args("--temp-dir", str(mine))).temp_dir == mine
    finally:
        folders_module._current = previous


def test_one_instance_never_serves_anothers_temp_files(tmp_path):
    previous = folders_module.current()
    try:
        first = create_context(options_for(tmp_path / "a"))
        (first.folders.temp_dir / "theirs.png").write_bytes(b"\x89PNG first instance's preview")
        options = options_for(tmp_path / "b")
        with TestClient(create_app(create_context(options), options, with_ui=False),
                        base_url="http://127.0.0.1:7860") as client:
            answer = client.get("/view", params={"filename": "theirs.png", "type": "temp"})
            assert answer.status_code == 404
    finally:
        folders_module._current = previous
