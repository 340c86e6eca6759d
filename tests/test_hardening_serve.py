"""Serving safely: --auth warns that the process list shows its password (INKWASH_AUTH does not), and
the API description is served only when asked for."""
import pytest
from fastapi.testclient import TestClient

from inkwash.webui.serve_options import ServeOptions, resolve
from inkwash.webui.server import create_app, create_context
from test_security import serve_args

FAST = 1000


def test_auth_on_the_command_line_with_listen_warns_once(monkeypatch):
    monkeypatch.delenv("INKWASH_AUTH", raising=False)
    options = resolve(serve_args("--listen", "--auth", "me:secret"), iterations=FAST)
    process_list = [w for w in options.warnings if "process list" in w or "(ps" in w]
    assert len(process_list) == 1 and "--auth-file" in process_list[0] and "INKWASH_AUTH" in process_list[0]
    assert "secret" not in " ".join(options.warnings)
    assert not [w for w in resolve(serve_args("--auth", "me:secret"), iterations=FAST).warnings if "(ps" in w]


def test_credentials_from_the_environment(monkeypatch):
    monkeypatch.setenv("INKWASH_AUTH", "me:secret,you:other")
    options = resolve(serve_args("--listen"), iterations=FAST)
    assert options.credentials.users == ["me", "you"] and options.credentials.verify("me", "secret")
    assert not [w for w in options.warnings if "(ps" in w]


@pytest.fixture(scope="module")
def folders_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    for name in ("models", "output", "input"):
        (root / name).mkdir()
    return root


def app_options(root, **kwargs) -> ServeOptions:
    return ServeOptions(models_dir=root / "models", output_dir=root / "output", input_dir=root / "input",
                        data_dir=root / "data", **kwargs)


@pytest.mark.parametrize("with_ui", [False, True])
def test_openapi_is_not_served_unless_asked_for(folders_root, with_ui):
    options = app_options(folders_root)
    with TestClient(create_app(create_context(options), options, with_ui=with_ui),
                    base_url="http://127.0.0.1:7860") as client:
        for path in ("/openapi.json", "/docs", "/redoc"):
            answer = client.get(path)
            assert answer.status_code == 404 or "openapi" not in answer.text[:200], path


def test_api_docs_serves_the_apps_own_description(folders_root):
    options = app_options(folders_root, api_docs=True)
    with TestClient(create_app(create_context(options), options), base_url="http://127.0.0.1:7860") as client:
        schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Inkwash" and "/prompt" in schema["paths"] and "/sdapi/v1/txt2img" in schema["paths"]
