"""Where a request may come from and how big it may be: the request checks in front of the app.

`SecurityMiddleware` wraps the whole ASGI app (HTTP and websockets alike) and, in this order:
refuses Host names that are not this machine's (DNS rebinding), refuses state-changing requests and
websocket upgrades whose Origin is another site (CSRF, cross-site websockets), asks for credentials when
some are configured (webui/auth.py: HTTP Basic for API clients, a login page and a signed session cookie
for browsers, with a lock-out after repeated failures), and caps request bodies.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..nodes.folders import UnsafePath, safe_path
from .asgi_send import headers_of, refuse, send_json
from .auth import Authenticator, Credentials, LoginThrottle, PasswordChecksBusy, SessionSigner

if TYPE_CHECKING:
    from .serve_options import ServeOptions

log = logging.getLogger("inkwash.security")

# --------------------------------------------------------------------------------------------------
# Host names (DNS rebinding). A rebinding page reaches us under the attacker's domain name, so the
# Host header is what gives it away. An IP-address Host cannot be rebound, which is why a server
# listening on all interfaces accepts any IP literal and, by name, only this machine's names.

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def split_host_port(value: str) -> tuple[str, int | None]:
    """'Example.COM:80' -> ('example.com', 80); '[::1]:7860' -> ('::1', 7860). Port None when absent."""
    value = value.strip()
    port: str | None = None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host = value  # a bare IPv6 address, or no port
    try:
        port_number = int(port) if port else None
    except ValueError:
        port_number = -1  # unparseable: never matches
    return host.lower().rstrip("."), port_number


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: browsers pin these to loopback
        return True
    address = _ip(host)
    return bool(address and address.is_loopback)


def is_wildcard(host: str) -> bool:
    return host in WILDCARD_ADDRESSES


def machine_names() -> set[str]:
    """This machine's host name in the forms a LAN browser may use (name, name.local, FQDN)."""
    names: set[str] = set()
    try:
        hostname = socket.gethostname().lower().rstrip(".")
    except OSError:
        return names
    if hostname:
        short = hostname.split(".")[0]
        names |= {hostname, short, f"{short}.local"}
        try:
            names.add(socket.getfqdn(hostname).lower().rstrip("."))
        except OSError:
            pass
    return {name for name in names if name}


class HostPolicy:
    """Which Host header values name this server. Loopback names and addresses are always allowed;
    `names` adds host names or IPs; `any_ip` allows every IP literal (listening on all interfaces);
    a name "*" turns the check off (behind a reverse proxy that does its own)."""

    def __init__(self, names: Iterable[str] = (), any_ip: bool = False):
        self.names = {split_host_port(name)[0] if not _ip(name) else str(_ip(name)) for name in names if name}
        self.any_ip = any_ip

    def allows(self, host: str) -> bool:
        if "*" in self.names:
            return True
        if not host or is_loopback(host):
            return True
        address = _ip(host)
        if address is not None:
            return self.any_ip or str(address) in self.names
        return host in self.names

    @classmethod
    def for_bind(cls, bind_host: str, extra_names: Iterable[str] = (), detect: bool = True) -> HostPolicy:
        """For a server bound to `bind_host`: loopback only when it is loopback; else also the bound
        address, this machine's names (when `detect`), `extra_names`, and any IP when bound to all."""
        names = set(extra_names)
        if not is_loopback(bind_host):
            if not is_wildcard(bind_host):
                names.add(bind_host)
            if detect:
                names |= machine_names()
        return cls(names, any_ip=is_wildcard(bind_host))

    def __repr__(self) -> str:
        return f"HostPolicy(names={sorted(self.names)!r}, any_ip={self.any_ip})"


def _as_host_policy(allowed_hosts: HostPolicy | Iterable[str] | None) -> HostPolicy:
    if isinstance(allowed_hosts, HostPolicy):
        return allowed_hosts
    return HostPolicy(allowed_hosts or ())


# --------------------------------------------------------------------------------------------------
# The middleware

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class RequestTooLarge(Exception):
    """Raised into the app from `receive` when a streamed body passes the limit (413 already sent)."""


def _origin_tuple(scheme: str, host: str, port: int | None) -> tuple[str, str, int | None]:
    return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme)


class SecurityMiddleware:
    """Pure ASGI middleware: Host check, Origin check, authentication, body size limit (see module doc).

    `credentials` None means no authentication (the CLI only allows that on loopback or with
    --insecure-no-auth). `allowed_hosts` is a HostPolicy or a list of extra names."""

    def __init__(self, app: Any, credentials: Credentials | None = None,
                 allowed_hosts: HostPolicy | Iterable[str] | None = None, *,
                 max_upload_bytes: int | None = 50 * 2**20, login_path: str = "/login",
                 logout_path: str = "/logout", throttle: LoginThrottle | None = None,
                 sessions: SessionSigner | None = None, frame_options: str | None = "SAMEORIGIN"):
        self.app = app
        self.credentials = credentials
        self.hosts = _as_host_policy(allowed_hosts)
        self.max_upload_bytes = max_upload_bytes
        self.frame_options = frame_options
        self.auth = None if credentials is None else Authenticator(
            credentials, login_path=login_path, logout_path=logout_path, throttle=throttle, sessions=sessions)

    # ---- entry

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        is_ws = scope["type"] == "websocket"
        host, host_port = split_host_port(headers.get("host", ""))

        if not self.hosts.allows(host):
            log.warning("refused Host %r (not a name of this server); start with --allowed-host %s if it is one",
                        host, host)
            await refuse(scope, receive, send, 400, 4400,
                         f"Host {host!r} is not a name of this server (DNS rebinding protection). "
                         "Open it by its IP address or by a name its owner allowed.")
            return

        method = scope.get("method", "GET")
        same_origin = self._same_origin(scope, headers, host, host_port)
        if not same_origin and "origin" in headers:
            scope["inkwash.foreign_origin"] = True  # its answer carries no CORS grant (_call_app)
        if (is_ws or method in STATE_CHANGING_METHODS) and not same_origin:
            await refuse(scope, receive, send, 403, 4403,
                         "Cross-site request refused: its Origin is not this server.")
            return

        if self.auth is None:
            await self._call_app(scope, receive, send, headers)
            return

        path = scope.get("path", "/")
        if not is_ws and path == self.auth.login_path and method in ("GET", "HEAD", "POST"):
            await self.auth.login(scope, receive, send, headers)
            return
        if not is_ws and path == self.auth.logout_path and method in ("GET", "POST"):
            await self.auth.logout(scope, send, headers)
            return

        try:
            user, retry_after = await self.auth.authenticate(scope, headers)
        except PasswordChecksBusy:
            await refuse(scope, receive, send, 429, 4429, "The server is busy checking passwords; try again.",
                         extra_headers=[(b"retry-after", b"1")])
            return
        if user is None:
            await self.auth.unauthenticated(scope, receive, send, headers, retry_after)
            return
        scope["inkwash.user"] = user
        await self._call_app(scope, receive, send, headers)

    # ---- checks

    def _same_origin(self, scope: dict, headers: dict[str, str], host: str, host_port: int | None) -> bool:
        origin = headers.get("origin")
        if origin is None:
            # Old browsers omit Origin; Fetch Metadata still tells a cross-site request apart.
            return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "same-site", "none")
        parts = urlsplit(origin.strip())
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:  # "null" (sandboxed, file://) included
            return False
        try:
            origin_port = parts.port
        except ValueError:
            return False
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        return (_origin_tuple(parts.scheme, parts.hostname.lower().rstrip("."), origin_port)
                == _origin_tuple(scheme, host, host_port))

    # ---- the app, with the body capped and JSON bodies checked

    async def _call_app(self, scope, receive, send, headers: dict[str, str]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes
        if limit is not None:
            try:
                declared = int(headers.get("content-length", "0") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                await send_json(send, 413, f"Request body too large (limit {limit} bytes).")
                return

        state = {"received": 0, "started": False, "cut": False}

        async def capped_receive():
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["cut"] = True
                    if not state["started"]:
                        state["started"] = True
                        await send_json(send, 413, f"Request body too large (limit {limit} bytes).")
                    raise RequestTooLarge()
            return message

        async def guarded_send(message):
            if state["cut"]:
                return  # the 413 is already out; drop whatever the app answers to the exception
            if message["type"] == "http.response.start":
                state["started"] = True
                if scope.get("inkwash.foreign_origin"):
                    # Gradio grants CORS (with credentials) to any Origin when reached by LAN address:
                    # another site, or another web UI on this host, could read images and prompts.
                    message = {**message, "headers": [(k, v) for k, v in message["headers"]
                                                      if not k.lower().startswith(b"access-control-")]}
                if self.frame_options and not any(k.lower() == b"x-frame-options" for k, _ in message["headers"]):
                    message = {**message, "headers": [*message["headers"],
                                                      (b"x-frame-options", self.frame_options.encode())]}
            await send(message)

        app_receive = capped_receive
        if scope.get("method") in STATE_CHANGING_METHODS and _may_be_json(headers):
            try:
                body = await _whole_body(capped_receive)
            except RequestTooLarge:
                return
            problem = json_problem(body)
            if problem is not None:
                await send_json(send, 400, problem)
                return
            app_receive = _replayed(body, receive)

        try:
            await self.app(scope, app_receive, guarded_send)
        except RequestTooLarge:
            pass
        except Exception:
            if not state["cut"]:
                raise


# --------------------------------------------------------------------------------------------------
# JSON bodies: every route parses them with Python's json, which takes NaN, Infinity and 1e999 (no JSON
# has them; stored, they break every listing that shows them) and recurses into nesting (RecursionError
# past ~1000 levels). Checked once here, for every door, before any route sees the body.

MAX_JSON_DEPTH = 64  # workflows in either format nest under 10 levels


def _may_be_json(headers: dict[str, str]) -> bool:
    """FastAPI reads a body as JSON when its type says JSON or when it names no type."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return not content_type or content_type.endswith("/json") or content_type.endswith("+json")


async def _whole_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replayed(body: bytes, receive: Callable) -> Callable:
    """A `receive` that gives the app the body already read, then what the client sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


def json_problem(body: bytes) -> str | None:
    """What makes this JSON body unusable, naming where: nesting past MAX_JSON_DEPTH or a number that
    is not finite. None when it is fine, or not JSON at all (the route then says so itself)."""
    if not body.strip()[:1] in (b"{", b"["):
        return None
    try:
        value = json.loads(body)
    except RecursionError:
        return f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return None
    stack = [(value, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            shown = "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
            return f"{_shown(path)}: {shown} is not a number JSON allows (NaN and Infinity are refused)"
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"{_shown(path)}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, f"{path}.{key}" if path else str(key), depth + 1) for key, item in items)
    return None


def _shown(path: str) -> str:
    if not path:
        return "request body"
    return path if len(path) <= 120 else "..." + path[-117:]


# --------------------------------------------------------------------------------------------------
# TLS and file names

def tls_kwargs(options: ServeOptions) -> dict[str, str]:
    """uvicorn.run(...) keyword arguments for HTTPS; empty when no certificate was given."""
    if options.tls_keyfile is None or options.tls_certfile is None:
        return {}
    return {"ssl_keyfile": str(options.tls_keyfile), "ssl_certfile": str(options.tls_certfile)}


def contained_path(base: Path, name: str) -> Path:
    """`base/name` with symlinks resolved; UnsafePath (a ValueError) naming the file when the name would
    leave `base`: absolute, '..', NUL, a Windows drive or backslash, or a symlink pointing out."""
    if isinstance(name, str) and "\\" in name:
        raise UnsafePath(f"file name {name!r} must use '/' (backslashes are refused)")
    return safe_path(Path(base), name)
