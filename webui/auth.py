"""Who the user is: password hashes, the configured credentials, session cookies, the login page and
the lock-out after failed logins.

Passwords are only ever held as salted PBKDF2 hashes; nothing here writes a password, a header value
carrying one, or the command line anywhere. `Authenticator` is the part of the security middleware
(webui/security.py) that asks for credentials: HTTP Basic for API clients, a login page and a signed
session cookie for browsers.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import html
import logging
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser

from .asgi_send import refuse, send_json, send_response

log = logging.getLogger("inkwash.security")

# --------------------------------------------------------------------------------------------------
# Password hashes: pbkdf2_sha256$iterations$salt_b64$hash_b64 (the stdlib only)

HASH_SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, digest), or ValueError when the string is not one of our hashes."""
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != HASH_SCHEME:
        raise ValueError(f"expected {HASH_SCHEME}$ITERATIONS$SALT$HASH")
    try:
        iterations = int(parts[1])
        salt, digest = _b64decode(parts[2]), _b64decode(parts[3])
    except (ValueError, binascii.Error):
        raise ValueError("malformed iterations, salt or hash") from None
    if iterations < 1 or not salt or len(digest) != 32:
        raise ValueError("malformed iterations, salt or hash")
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    try:
        iterations, salt, expected = _parse_hash(encoded)
    except ValueError:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


class CredentialsError(ValueError):
    """Malformed --auth / --auth-file input. Messages never contain the password or the hash."""


class Credentials:
    """User names and their password hashes. The repr shows neither passwords nor hashes."""

    def __init__(self, hashes: dict[str, str]):
        if not hashes:
            raise CredentialsError("no users given")
        for user, encoded in hashes.items():
            try:
                _parse_hash(encoded)
            except ValueError as exc:
                raise CredentialsError(f"user {user!r}: {exc}") from None
        self._hashes = dict(hashes)
        # Checking PBKDF2 on every Basic-authenticated API call would cost ~0.5 s each: remember the
        # pairs that verified, keyed by an HMAC under a per-process secret (never the password itself).
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # verify() runs in worker threads
        # Unknown users still pay for one hash, so timing does not tell which user names exist.
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), iterations=_parse_hash(
            next(iter(self._hashes.values())))[0])

    @property
    def users(self) -> list[str]:
        return sorted(self._hashes)

    def __contains__(self, user: object) -> bool:
        return user in self._hashes

    def __repr__(self) -> str:
        return f"Credentials(users={self.users!r})"

    def _pair_key(self, user: str, password: str) -> bytes:
        return hmac.new(self._cache_key, f"{user}\x00{password}".encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def known_good(self, user: str, password: str) -> bool:
        """This pair verified recently (no hashing needed)."""
        key = self._pair_key(user, password)
        with self._lock:
            if key in self._verified:
                self._verified.move_to_end(key)
                return True
        return False

    def verify(self, user: str, password: str) -> bool:
        if self.known_good(user, password):
            return True
        key = self._pair_key(user, password)
        known = user in self._hashes
        ok = verify_password(password, self._hashes[user] if known else self._dummy_hash) and known
        if ok:
            with self._lock:
                self._verified[key] = None
                while len(self._verified) > 64:
                    self._verified.popitem(last=False)
        return ok

    @classmethod
    def from_auth_args(cls, auth: str | Iterable[str] | None = None, auth_file: str | Path | None = None,
                       iterations: int = DEFAULT_ITERATIONS) -> Credentials | None:
        """From `--auth USER:PASS[,USER:PASS...]` (repeatable) and `--auth-file`; None when neither is given."""
        hashes: dict[str, str] = {}
        for user, password in parse_auth_pairs(auth):
            hashes[user] = hash_password(password, iterations)
        if auth_file is not None:
            hashes.update(read_auth_file(auth_file))
        return cls(hashes) if hashes else None


def parse_auth_pairs(auth: str | Iterable[str] | None) -> list[tuple[str, str]]:
    """`USER:PASS` entries, comma-separated as A1111's --gradio-auth; the password may contain ':'."""
    if auth is None:
        return []
    values = [auth] if isinstance(auth, str) else list(auth)
    pairs = []
    for value in values:
        for position, entry in enumerate(value.split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            user, sep, password = entry.partition(":")
            user = user.strip()
            if not sep or not user or not password:
                # The entry itself may hold a password: say where, not what.
                raise CredentialsError(f"--auth entry {position} must be USER:PASS with a non-empty user "
                                       "and password")
            pairs.append((user, password))
    return pairs


def read_auth_file(path: str | Path) -> dict[str, str]:
    """`user:hash` lines (blank lines and # comments skipped) -> {user: hash}."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read auth file {path}: {exc.__class__.__name__}") from None
    hashes: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        user = user.strip()
        try:
            if not sep or not user:
                raise ValueError("expected user:hash")
            _parse_hash(encoded.strip())
        except ValueError as exc:
            raise CredentialsError(f"{path} line {number}: {exc} (make a line with `inkwash hash-password "
                                   "USER`)") from None
        hashes[user] = encoded.strip()
    if not hashes:
        raise CredentialsError(f"auth file {path} holds no user:hash lines")
    return hashes


# --------------------------------------------------------------------------------------------------
# `inkwash hash-password USER`: prints a line for --auth-file. The password is read from the terminal
# (or stdin when piped), never taken from the command line where `ps` and shell history would see it.

def add_hash_password_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="user name for the line")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=argparse.SUPPRESS)


def hash_password_command(args: argparse.Namespace, stdin=None, stdout=None, stderr=None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    user = args.user.strip()
    if not user or ":" in user or "\n" in user:
        print("the user name must be non-empty and contain no ':'", file=stderr)
        return 2
    if stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=stderr)
            return 2
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password refused", file=stderr)
        return 2
    print(f"{user}:{hash_password(password, args.iterations)}", file=stdout)
    return 0


# --------------------------------------------------------------------------------------------------
# Redirects after login must stay on this server.

def safe_next(target: str | None, default: str = "/") -> str:
    """`target` when it is a local path ('/...'), else `default`: no scheme, no host, no '//' or '\\'."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target

# --------------------------------------------------------------------------------------------------
# Brute-force lock-out

class LoginThrottle:
    """After `max_failures` failed password checks for one key (a client address, or a user name)
    within `window` seconds, new password checks for that key are answered 429 for `lockout` seconds."""

    def __init__(self, max_failures: int = 10, window: float = 60.0, lockout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_failures, self.window, self.lockout, self.clock = max_failures, window, lockout, clock
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        until = self._blocked_until.get(address)
        if until is None:
            return 0
        left = until - self.clock()
        if left <= 0:
            del self._blocked_until[address]
            return 0
        return max(1, int(left + 0.999))

    def failed(self, address: str) -> None:
        now = self.clock()
        failures = self._failures.setdefault(address, deque())
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            self._blocked_until[address] = now + self.lockout
            failures.clear()
            log.warning("locked out %s for %d s after %d failed logins", address, self.lockout, self.max_failures)
        if len(self._failures) > 10_000:  # many addresses: forget the quiet ones
            for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window]:
                del self._failures[key]

# --------------------------------------------------------------------------------------------------
# Session cookies: base64(user).expires.nonce.signature, HMAC-SHA256 under a per-process secret, so a
# restart logs everyone out and nothing needs storing.

class SessionSigner:
    def __init__(self, secret: bytes | None = None, max_age: int = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time):
        self.secret = secret or secrets.token_bytes(32)
        self.max_age, self.clock = max_age, clock
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def _sign(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
                                        ).decode().rstrip("=")

    def issue(self, user: str) -> str:
        user_b64 = base64.urlsafe_b64encode(user.encode("utf-8")).decode().rstrip("=")
        payload = f"{user_b64}.{int(self.clock()) + self.max_age}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def _parts(self, token: str) -> tuple[str, int, str] | None:
        payload, _, signature = token.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            user_b64, expires, nonce = payload.split(".")
            user = base64.urlsafe_b64decode(user_b64 + "=" * (-len(user_b64) % 4)).decode("utf-8")
            return user, int(expires), nonce
        except (ValueError, binascii.Error):
            return None

    def user(self, token: str) -> str | None:
        """The user a valid, unexpired, not logged-out token names; else None."""
        parts = self._parts(token)
        if parts is None:
            return None
        user, expires, nonce = parts
        if expires < self.clock() or nonce in self._revoked:
            return None
        return user

    def revoke(self, token: str) -> None:
        parts = self._parts(token)
        if parts is not None:
            self._revoked[parts[2]] = parts[1]
            now = self.clock()
            while self._revoked and (len(self._revoked) > 10_000 or next(iter(self._revoked.values())) < now):
                self._revoked.popitem(last=False)


# --------------------------------------------------------------------------------------------------
# The login flow, for the middleware

LOGIN_BODY_LIMIT = 16 * 1024
URL_SAFE = "/:?#[]@!$&'()*+,;=%~"  # characters quote() leaves alone in a path+query

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inkwash · sign in</title>
<style>
:root {{ color-scheme: light dark; font-family: system-ui, sans-serif; }}
body {{ display: grid; place-items: center; min-height: 100vh; margin: 0; }}
form {{ display: grid; gap: .75rem; width: min(20rem, 90vw); padding: 2rem; border: 1px solid #8884;
        border-radius: .75rem; }}
h1 {{ margin: 0 0 .5rem; font-size: 1.4rem; }}
input {{ font: inherit; padding: .5rem; }}
button {{ font: inherit; padding: .55rem; cursor: pointer; }}
.error {{ color: #d33; margin: 0; }}
</style></head>
<body><form method="post" action="{action}">
<h1>Inkwash</h1>
{message}
<label>User <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form></body></html>
"""


class PasswordChecksBusy(Exception):
    """Every password-hashing slot is taken: the check is refused now, not queued."""


class Authenticator:
    """Asks for credentials: checks session cookies and HTTP Basic, serves the login page and the
    logout, and answers what is not authenticated (a login redirect for browsers, 401 or 429)."""

    def __init__(self, credentials: Credentials, *, login_path: str = "/login", logout_path: str = "/logout",
                 throttle: LoginThrottle | None = None, user_throttle: LoginThrottle | None = None,
                 sessions: SessionSigner | None = None, max_hashing: int = 2):
        self.credentials = credentials
        self.login_path, self.logout_path = login_path, logout_path
        self.throttle = throttle or LoginThrottle()  # per client address
        # per user name: guesses spread over many addresses (a botnet, rotating proxies) still add up
        self.user_throttle = user_throttle or LoginThrottle(max_failures=30, clock=self.throttle.clock)
        self.sessions = sessions or SessionSigner()
        self._hashing = threading.BoundedSemaphore(max_hashing)

    def client_address(self, scope: dict) -> str:
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    def _cookie_name(self, scope: dict) -> str:
        # Cookies ignore ports: one name per port keeps two servers on one machine from clashing.
        server = scope.get("server")
        return f"inkwash_session_{server[1]}" if server and server[1] else "inkwash_session"

    async def authenticate(self, scope: dict, headers: dict[str, str]) -> tuple[str | None, int]:
        """(user, 0) when the request carries a valid session cookie or Basic credentials; else
        (None, seconds to wait before trying again, 0 when it may now)."""
        token = cookie_parser(headers.get("cookie", "")).get(self._cookie_name(scope))
        if token:
            user = self.sessions.user(token)
            if user is not None and user in self.credentials:
                return user, 0
        authorization = headers.get("authorization", "")
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None, 0
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, binascii.Error):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep:
            user = password = ""
        return (user, 0) if await self.check(self.client_address(scope), user, password) else (
            None, self.retry_after(self.client_address(scope), user))

    def retry_after(self, address: str, user: str) -> int:
        return max(self.throttle.retry_after(address), self.user_throttle.retry_after(user))

    async def check(self, address: str, user: str, password: str) -> bool:
        """Whether this user and password are right, with the lock-outs and the bound on hashing.

        A pair that verified recently gets in without hashing, even from a locked-out address (the
        household behind a NAT whose guest mistyped); a new check from a locked-out address or for a
        locked-out user is not made; at most `max_hashing` checks hash at once, the rest are answered
        429 (PasswordChecksBusy) at once rather than queued."""
        if user and self.credentials.known_good(user, password):
            return True
        if self.retry_after(address, user):
            return False
        if not user or not self._hashing.acquire(blocking=False):
            if user:
                raise PasswordChecksBusy()
            ok = False
        else:
            try:  # PBKDF2 takes a good fraction of a second: keep it off the event loop
                ok = await run_in_threadpool(self.credentials.verify, user, password)
            finally:
                self._hashing.release()
        if not ok:
            self.throttle.failed(address)
            self.user_throttle.failed(user)
        return ok

    async def unauthenticated(self, scope, receive, send, headers, retry_after: int) -> None:
        if retry_after:
            await refuse(scope, receive, send, 429, 4429, "Too many failed logins; try again later.",
                         extra_headers=[(b"retry-after", str(retry_after).encode())])
            return
        if scope["type"] == "websocket":
            await refuse(scope, receive, send, 403, 4401, "Authentication required.")
            return
        method = scope.get("method", "GET")
        is_navigation = method in ("GET", "HEAD") and (
            "text/html" in headers.get("accept", "") or headers.get("sec-fetch-mode") == "navigate")
        if is_navigation:
            raw_path = scope.get("raw_path")  # still percent-encoded, unlike "path"
            target = raw_path.decode("latin-1") if raw_path else quote(scope.get("path", "/"), safe=URL_SAFE)
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            location = self.login_path
            if safe_next(target) != "/":
                location += "?next=" + quote(safe_next(target), safe="")
            await send_response(send, 303, b"", "text/plain", [(b"location", location.encode("latin-1"))])
            return
        await send_json(send, 401, "Not authenticated: send HTTP Basic credentials or sign in at "
                        f"{self.login_path}", [(b"www-authenticate", b'Basic realm="Inkwash"')])

    async def login(self, scope, receive, send, headers) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        next_path = safe_next((query.get("next") or [None])[0])
        if scope["method"] != "POST":
            await self._login_page(send, next_path)
            return
        body = await self._read_small_body(receive)
        if body is None:
            await send_json(send, 413, "Login form too large.")
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        next_path = safe_next((form.get("next") or [next_path])[0])
        address = self.client_address(scope)
        user = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        retry_after = self.retry_after(address, user)  # locked before this try: say so
        try:
            ok = await self.check(address, user, password)
        except PasswordChecksBusy:
            await self._login_page(send, next_path, 429, "The server is busy checking passwords; try again.",
                                   [(b"retry-after", b"1")])
            return
        if not ok:
            if retry_after:
                await self._login_page(send, next_path, 429, "Too many failed logins; try again in a minute.",
                                       [(b"retry-after", str(retry_after).encode())])
            else:
                await self._login_page(send, next_path, 401, "Wrong user name or password.")
            return
        cookie = (f"{self._cookie_name(scope)}={self.sessions.issue(user)}; Path=/; HttpOnly; SameSite=Strict; "
                  f"Max-Age={self.sessions.max_age}")
        if scope.get("scheme") == "https":
            cookie += "; Secure"
        location = quote(next_path, safe=URL_SAFE)  # the form gives it back decoded; headers are ASCII
        await send_response(send, 303, b"", "text/plain",
                            [(b"location", location.encode("ascii")), (b"set-cookie", cookie.encode("latin-1"))])

    async def logout(self, scope, send, headers) -> None:
        name = self._cookie_name(scope)
        token = cookie_parser(headers.get("cookie", "")).get(name)
        if token:
            self.sessions.revoke(token)
        cookie = f"{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        await send_response(send, 303, b"", "text/plain",
                            [(b"location", self.login_path.encode("latin-1")), (b"set-cookie", cookie.encode())])

    async def _login_page(self, send, next_path: str, status: int = 200, message: str = "",
                          extra_headers: list | None = None) -> None:
        page = LOGIN_PAGE.format(
            action=html.escape(self.login_path, quote=True), next=html.escape(next_path, quote=True),
            message=f'<p class="error" role="alert">{html.escape(message)}</p>' if message else "")
        csp = (b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
               b"base-uri 'none'")
        await send_response(send, status, page.encode("utf-8"), "text/html; charset=utf-8",
                            [(b"content-security-policy", csp), (b"x-frame-options", b"DENY"),
                             *(extra_headers or [])])

    async def _read_small_body(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > LOGIN_BODY_LIMIT:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)
