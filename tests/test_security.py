"""Server security: Host and Origin checks, authentication, upload limit, serve options, file names."""
from __future__ import annotations

import argparse
import base64
import io
import os
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, UploadFile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from inkwash.nodes.folders import UnsafePath
from inkwash.webui import auth, security
from inkwash.webui.auth import (Credentials, CredentialsError, LoginThrottle, hash_password, read_auth_file,
                                safe_next, verify_password)
from inkwash.webui.security import HostPolicy, SecurityMiddleware, contained_path
from inkwash.webui.serve_options import ServeRefused, add_serve_arguments, resolve

FAST = 1000  # PBKDF2 iterations for tests; the default is deliberately slow
BASE = "http://localhost:7860"
WS = "ws://localhost:7860/ws"


async def home(request: Request):
    return PlainTextResponse(f"home of {request.scope.get('inkwash.user')}")


async def echo(request: Request):
    body = await request.body()
    return JSONResponse({"size": len(body)})


async def ws_endpoint(websocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app(credentials=None, allowed_hosts=None, **kwargs):
    inner = Starlette(routes=[Route("/", home), Route("/page", home), Route("/api/echo", echo, methods=["POST"]),
                              WebSocketRoute("/ws", ws_endpoint)])
    return SecurityMiddleware(inner, credentials, allowed_hosts, **kwargs)


def creds(**users):
    return Credentials({user: hash_password(password, FAST) for user, password in users.items()})


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---- Host (DNS rebinding)

def test_loopback_hosts_pass_and_foreign_hosts_are_refused():
    client = TestClient(make_app(), base_url=BASE)
    for host in ("localhost:7860", "127.0.0.1:7860", "[::1]:7860", "app.localhost"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    response = client.get("/", headers={"Host": "evil.example.com"})
    assert response.status_code == 400
    assert "evil.example.com" in response.json()["detail"] and "rebinding" in response.json()["detail"]


def test_listening_on_all_interfaces_accepts_lan_ip_and_machine_name_only():
    policy = HostPolicy.for_bind("0.0.0.0", extra_names=["studio.lan"], detect=False)
    client = TestClient(make_app(allowed_hosts=policy), base_url=BASE)
    for host in ("192.168.1.20:7860", "[fe80::1]:7860", "studio.lan:7860", "localhost:7860"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert client.get("/", headers={"Host": "evil.example.com:7860"}).status_code == 400


def test_loopback_bind_refuses_lan_addresses():
    policy = HostPolicy.for_bind("127.0.0.1", detect=False)
    assert policy.allows("127.0.0.1") and policy.allows("localhost")
    assert not policy.allows("192.168.1.20") and not policy.allows("evil.example.com")
    bound = HostPolicy.for_bind("192.168.1.20", detect=False)
    assert bound.allows("192.168.1.20") and not bound.allows("192.168.1.99")


def test_websocket_with_foreign_host_is_refused():
    client = TestClient(make_app(), base_url=BASE)
    with (pytest.raises(WebSocketDisconnect) as refused,
          client.websocket_connect(WS, headers={"Host": "evil.example.com"})):
        pass
    assert refused.value.code == 4400


# ---- Origin (cross-site requests)

def test_same_origin_post_passes_and_foreign_origin_is_refused():
    client = TestClient(make_app(), base_url=BASE)
    assert client.post("/api/echo", content=b"abc", headers={"Origin": BASE}).json() == {"size": 3}
    assert client.post("/api/echo", content=b"abc").status_code == 200  # API clients send no Origin
    for origin in ("http://evil.example.com", "http://localhost:9999", "https://localhost:7860", "null"):
        response = client.post("/api/echo", content=b"abc", headers={"Origin": origin})
        assert response.status_code == 403, origin
    cross_site = client.post("/api/echo", content=b"abc", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    # Reading is not state-changing: a GET with a foreign Origin is left to CORS.
    assert client.get("/", headers={"Origin": "http://evil.example.com"}).status_code == 200


def test_websocket_from_foreign_origin_is_refused():
    client = TestClient(make_app(), base_url=BASE)
    with client.websocket_connect(WS, headers={"Origin": BASE}) as ws:
        assert ws.receive_text() == "hello"
    with (pytest.raises(WebSocketDisconnect) as refused,
          client.websocket_connect(WS, headers={"Origin": "http://evil.example.com"})):
        pass
    assert refused.value.code == 4403


# ---- Authentication

@pytest.fixture
def auth_client():
    return TestClient(make_app(creds(alice="s3cret:with-colon")), base_url=BASE, follow_redirects=False)


def test_api_request_without_credentials_gets_401_with_basic_challenge(auth_client):
    response = auth_client.get("/page")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="Inkwash"'
    assert auth_client.post("/api/echo", content=b"x").status_code == 401


def test_browser_navigation_is_redirected_to_login_with_next(auth_client):
    response = auth_client.get("/page?tab=img2img", headers={"Accept": "text/html,*/*"})
    assert response.status_code in (302, 303)
    assert response.headers["location"] == "/login?next=%2Fpage%3Ftab%3Dimg2img"
    # The form hands `next` back decoded; the redirect after login still is a valid, local URL.
    login = auth_client.post("/login", data={"username": "alice", "password": "s3cret:with-colon",
                                             "next": "/view?filename=画 1.png"})
    assert login.headers["location"] == "/view?filename=%E7%94%BB%201.png"


def test_basic_credentials_pass_and_wrong_password_is_refused(auth_client):
    response = auth_client.get("/page", headers=basic("alice", "s3cret:with-colon"))
    assert response.status_code == 200 and response.text == "home of alice"
    assert auth_client.get("/page", headers=basic("alice", "wrong")).status_code == 401
    assert auth_client.get("/page", headers=basic("mallory", "s3cret:with-colon")).status_code == 401
    assert auth_client.get("/page", headers={"Authorization": "Basic !!notbase64"}).status_code == 401


def test_login_form_sets_session_cookie_then_logout_clears_it(auth_client):
    page = auth_client.get("/login?next=/page")
    assert page.status_code == 200 and "<form" in page.text and 'value="/page"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    wrong = auth_client.post("/login", data={"username": "alice", "password": "nope", "next": "/page"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert "set-cookie" not in wrong.headers

    login = auth_client.post("/login", data={"username": "alice", "password": "s3cret:with-colon", "next": "/page"},
                             headers={"Origin": BASE})
    assert login.status_code == 303 and login.headers["location"] == "/page"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("inkwash_session_7860=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]

    page = auth_client.get("/page", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.text == "home of alice"
    with auth_client.websocket_connect(WS, headers={"Origin": BASE}) as ws:
        assert ws.receive_text() == "hello"

    logout = auth_client.get("/logout")
    assert logout.status_code == 303 and "Max-Age=0" in logout.headers["set-cookie"]
    assert auth_client.get("/page").status_code == 401
    # The old token stays dead even if a client kept it.
    auth_client.cookies.set("inkwash_session_7860", token)
    assert auth_client.get("/page").status_code == 401


def test_forged_or_tampered_cookie_is_refused(auth_client):
    auth_client.cookies.set("inkwash_session_7860", "YWxpY2U.9999999999.nonce.forgedsignature")
    assert auth_client.get("/page").status_code == 401


def test_login_from_foreign_origin_is_refused(auth_client):
    response = auth_client.post("/login", data={"username": "alice", "password": "s3cret:with-colon"},
                                headers={"Origin": "http://evil.example.com"})
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_websocket_without_credentials_is_refused_and_basic_lets_it_in(auth_client):
    with pytest.raises(WebSocketDisconnect) as refused, auth_client.websocket_connect(WS):
        pass
    assert refused.value.code == 4401
    with auth_client.websocket_connect(WS, headers=basic("alice", "s3cret:with-colon")) as ws:
        assert ws.receive_text() == "hello"


@pytest.mark.parametrize("target", ["//evil.example.com/x", "https://evil.example.com", "/\\evil.example.com",
                                    "javascript:alert(1)", "evil.example.com", "/ok\r\nSet-Cookie: x=1"])
def test_next_parameter_only_allows_local_paths(auth_client, target):
    assert safe_next(target) == "/"
    response = auth_client.post("/login", data={"username": "alice", "password": "s3cret:with-colon",
                                                "next": target})
    assert response.headers["location"] == "/"
    assert safe_next("/page?x=1#top") == "/page?x=1#top"


def test_ten_failed_logins_lock_the_address_out_for_a_minute():
    now = [1000.0]
    app = make_app(creds(alice="pw"), throttle=LoginThrottle(clock=lambda: now[0]))
    client = TestClient(app, base_url=BASE, follow_redirects=False)
    for _ in range(10):
        assert client.post("/login", data={"username": "alice", "password": "guess"}).status_code == 401
    locked = client.post("/login", data={"username": "alice", "password": "pw"})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) <= 60
    assert client.get("/page", headers=basic("alice", "pw")).status_code == 429  # Basic is no way around it
    other = TestClient(app, base_url=BASE, follow_redirects=False, client=("10.0.0.9", 5000))
    assert other.get("/page", headers=basic("alice", "pw")).status_code == 200
    now[0] += 61
    assert client.post("/login", data={"username": "alice", "password": "pw"}).status_code == 303


def test_failures_spread_over_more_than_a_minute_do_not_lock_out():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(20):
        throttle.failed("1.2.3.4")
        now[0] += 7
    assert throttle.retry_after("1.2.3.4") == 0


# ---- Upload limit

def test_declared_body_over_the_limit_gets_413_before_reading():
    client = TestClient(make_app(max_upload_bytes=100), base_url=BASE)
    assert client.post("/api/echo", content=b"x" * 100).json() == {"size": 100}
    response = client.post("/api/echo", content=b"x" * 101)
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_chunked_body_is_cut_off_at_the_limit():
    client = TestClient(make_app(max_upload_bytes=100), base_url=BASE)

    def chunks():
        for _ in range(10):
            yield b"x" * 30

    response = client.post("/api/echo", content=chunks())  # no Content-Length: streamed
    assert response.status_code == 413


# ---- Credentials and hashes

def test_password_hash_format_and_verification():
    encoded = hash_password("correct horse", iterations=FAST)
    scheme, iterations, _salt, _digest = encoded.split("$")
    assert scheme == "pbkdf2_sha256" and iterations == str(FAST)
    assert verify_password("correct horse", encoded) and not verify_password("wrong", encoded)
    assert hash_password("correct horse", FAST) != encoded  # salted
    assert not verify_password("x", "md5$1$abc$def")


def test_auth_file_parsing(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text(f"# users\n\nalice:{hash_password('a-pw', FAST)}\nbob:{hash_password('b-pw', FAST)}\n")
    credentials = Credentials.from_auth_args(auth_file=path)
    assert credentials.users == ["alice", "bob"]
    assert credentials.verify("bob", "b-pw") and not credentials.verify("bob", "a-pw")
    assert "pbkdf2" not in repr(credentials)

    path.write_text("alice:plaintext-password\n")
    with pytest.raises(CredentialsError, match="line 1") as bad:
        read_auth_file(path)
    assert "plaintext-password" not in str(bad.value)


def test_plain_auth_list_is_hashed_and_errors_hide_the_password():
    credentials = Credentials.from_auth_args(["alice:pw1,bob:p:w2", "carol:pw3"], iterations=FAST)
    assert credentials.users == ["alice", "bob", "carol"]
    assert credentials.verify("bob", "p:w2") and credentials.verify("carol", "pw3")
    assert "pw1" not in repr(credentials) and "pw1" not in repr(vars(credentials))
    with pytest.raises(CredentialsError) as bad:
        Credentials.from_auth_args("alice:ok,secretwithoutcolon", iterations=FAST)
    assert "secretwithoutcolon" not in str(bad.value) and "entry 2" in str(bad.value)


def test_hash_password_command_prints_an_auth_file_line(tmp_path):
    out = io.StringIO()
    args = SimpleNamespace(user="alice", iterations=FAST)
    assert auth.hash_password_command(args, stdin=io.StringIO("pw\n"), stdout=out) == 0
    line = out.getvalue().strip()
    (tmp_path / "users").write_text(line + "\n")
    assert Credentials.from_auth_args(auth_file=tmp_path / "users").verify("alice", "pw")
    assert auth.hash_password_command(args, stdin=io.StringIO("\n"), stdout=io.StringIO(),
                                          stderr=io.StringIO()) == 2


# ---- serve options

def serve_args(*argv):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_binds_loopback_without_auth():
    options = resolve(serve_args())
    assert options.host == "127.0.0.1" and options.port == 7860 and not options.exposed
    assert options.credentials is None and options.warnings == []


def test_listen_without_credentials_is_refused_with_a_way_out():
    with pytest.raises(ServeRefused) as refused:
        resolve(serve_args("--listen"))
    message = str(refused.value)
    assert "all network interfaces" in message and "--auth" in message and "--insecure-no-auth" in message
    with pytest.raises(ServeRefused):
        resolve(serve_args("--listen", "192.168.1.20"))


def test_listen_with_insecure_no_auth_or_credentials_starts():
    options = resolve(serve_args("--listen", "--insecure-no-auth"))
    assert options.host == "0.0.0.0" and options.exposed and options.credentials is None
    assert any("WITHOUT authentication" in warning for warning in options.warnings)
    options = resolve(serve_args("--listen", "192.168.1.20", "--port", "8000", "--auth", "alice:pw"),
                      iterations=FAST)
    assert options.host == "192.168.1.20" and options.port == 8000
    assert options.credentials.verify("alice", "pw")
    assert "pw" not in repr(options).replace("pbkdf", "")


def test_tls_flags_go_together_and_files_must_exist(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_text("k")
    cert.write_text("c")
    with pytest.raises(ServeRefused, match="go together"):
        resolve(serve_args("--tls-keyfile", str(key)))
    with pytest.raises(ServeRefused, match="no such file"):
        resolve(serve_args("--tls-keyfile", str(key), "--tls-certfile", str(tmp_path / "missing.pem")))
    with pytest.raises(ServeRefused, match="no such file"):
        resolve(serve_args("--auth-file", str(tmp_path / "missing")))
    options = resolve(serve_args("--tls-keyfile", str(key), "--tls-certfile", str(cert)))
    assert security.tls_kwargs(options) == {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}
    assert options.url.startswith("https://")
    assert security.tls_kwargs(resolve(serve_args())) == {}


# ---- file names

@pytest.mark.parametrize("name", ["../secret.png", "a/../../x", "/etc/passwd", "a\x00b", "C:/x", "C:x",
                                  "..\\secret.png", "sub\\..\\..\\x"])
def test_contained_path_refuses_names_leaving_the_folder(tmp_path, name):
    with pytest.raises(ValueError) as refused:
        contained_path(tmp_path, name)
    assert isinstance(refused.value, UnsafePath) and repr(name) in str(refused.value)


def test_contained_path_follows_symlinks_and_refuses_escapes(tmp_path):
    base = tmp_path / "input"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside" / "secret.png", base / "link.png")
    os.symlink(tmp_path / "outside", base / "sub" / "escape")
    for name in ("link.png", "sub/escape/secret.png"):
        with pytest.raises(UnsafePath, match="leaves its folder"):
            contained_path(base, name)
    (base / "sub" / "ok.png").write_bytes(b"x")
    os.symlink(base / "sub" / "ok.png", base / "inside.png")
    assert contained_path(base, "sub/ok.png") == (base / "sub" / "ok.png").resolve()
    assert contained_path(base, "inside.png") == (base / "sub" / "ok.png").resolve()


def test_fastapi_app_with_add_middleware():
    app = FastAPI()

    @app.post("/upload/image")
    async def upload(image: UploadFile):
        return {"size": len(await image.read())}

    app.add_middleware(SecurityMiddleware, credentials=creds(alice="pw"),
                       allowed_hosts=HostPolicy.for_bind("0.0.0.0", detect=False), max_upload_bytes=1000)
    client = TestClient(app, base_url="http://192.168.1.20:7860")
    files = {"image": ("a.png", b"x" * 10, "image/png")}
    assert client.post("/upload/image", files=files).status_code == 401
    assert client.post("/upload/image", files=files, headers=basic("alice", "pw")).json() == {"size": 10}
    big = {"image": ("a.png", b"x" * 2000, "image/png")}
    assert client.post("/upload/image", files=big, headers=basic("alice", "pw")).status_code == 413

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(50):
            yield b"x" * 100

    streamed = client.post("/upload/image", content=chunks(), headers={
        **basic("alice", "pw"), "Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
