"""`inkwash serve` options and the rules that keep a LAN-visible server from starting wide open.

Loopback (127.0.0.1) is the default. `--listen` alone binds all interfaces, `--listen HOST` binds HOST.
A server reachable from other machines refuses to start without `--auth`/`--auth-file` unless
`--insecure-no-auth` says that is really meant.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import preview_method
from .auth import Credentials, CredentialsError
from .security import is_loopback, is_wildcard, machine_names

DEFAULT_HOST = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
DEFAULT_PORT = 7860
AUTH_ENVIRONMENT = "INKWASH_AUTH"  # USER:PASS[,USER:PASS...], as --auth, out of the process list


class ServeRefused(Exception):
    """The options are unsafe or inconsistent; the message says why and what to do."""


@dataclass
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    credentials: Credentials | None = None  # hashed; its repr lists user names only
    insecure_no_auth: bool = False
    tls_keyfile: Path | None = None
    tls_certfile: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    models_dir: Path | None = None
    output_dir: Path | None = None
    input_dir: Path | None = None
    data_dir: Path | None = None
    temp_dir: Path | None = None  # previews and temp uploads; default <data dir>/temp, emptied at start
    extra_model_paths: Path | None = None
    api_docs: bool = False  # serve the app's OpenAPI description at /openapi.json
    warnings: list[str] = field(default_factory=list)  # for the CLI to print at start-up
    preview_method: str = preview_method.DEFAULT  # sampler previews on /ws for ComfyUI clients

    @property
    def exposed(self) -> bool:
        """Reachable from other machines."""
        return not is_loopback(self.host)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"

    @property
    def url(self) -> str:
        """An address to print for people to open."""
        host = self.host
        if is_wildcard(host):
            names = sorted(machine_names(), key=len)
            host = names[0] if names else "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}/"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    network = parser.add_argument_group("network")
    network.add_argument("--listen", nargs="?", const=ALL_INTERFACES, default=None, metavar="HOST",
                         help="serve other machines too: all interfaces, or only the address HOST "
                              f"(default: {DEFAULT_HOST} only)")
    network.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    network.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                         help="a further host name browsers may use to reach this server (repeatable; "
                              "this machine's IPs and host name are allowed already)")
    security = parser.add_argument_group("security")
    security.add_argument("--auth", action="append", default=None, metavar="USER:PASS",
                          help="require this user and password (comma-separated list allowed, repeatable); "
                               "visible to other users in the process list: prefer --auth-file or the "
                               f"{AUTH_ENVIRONMENT} environment variable")
    security.add_argument("--auth-file", metavar="FILE",
                          help="require a user from FILE: `user:hash` lines made by `inkwash hash-password USER`")
    security.add_argument("--insecure-no-auth", action="store_true",
                          help="allow --listen without credentials: anyone on the network can use this server")
    security.add_argument("--tls-keyfile", metavar="FILE", help="serve HTTPS with this private key")
    security.add_argument("--tls-certfile", metavar="FILE", help="serve HTTPS with this certificate")
    security.add_argument("--api-docs", action="store_true",
                          help="serve the API's OpenAPI description at /openapi.json (off: it lists every route)")
    paths = parser.add_argument_group("folders")
    paths.add_argument("--models-dir", metavar="DIR", help="model folders root (default: models/)")
    paths.add_argument("--output-dir", metavar="DIR", help="where images are written (default: output/)")
    paths.add_argument("--input-dir", metavar="DIR", help="where uploaded and loaded images live (default: input/)")
    paths.add_argument("--data-dir", metavar="DIR", help="job database and user data (default: data/)")
    paths.add_argument("--temp-dir", metavar="DIR",
                       help="previews and temporary uploads, emptied at start (default: temp/ in the data folder)")
    paths.add_argument("--extra-model-paths", metavar="YAML",
                       help="an extra_model_paths.yaml adding an A1111/ComfyUI install's models")
    parser.add_argument("--preview-method", choices=preview_method.METHODS, default=preview_method.DEFAULT,
                        help="sampler previews sent to ComfyUI clients, unless a prompt asks otherwise "
                             f"(default: {preview_method.DEFAULT}, as ComfyUI)")
    add_runtime_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """How models run: precision and compiling (`inkwash serve` and `inkwash run`)."""
    from inkwash.nodes.runtime.devices import PRECISIONS

    runtime = parser.add_argument_group("models")
    runtime.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="dtype of the models: auto = fp16 on GPUs (the VAE in bf16 where the GPU supports "
                              "it) and fp32 on the CPU (default: auto). A half-precision VAE that gives NaN "
                              "moves to bf16/fp32 on its own.")
    runtime.add_argument("--compile", action="store_true",
                         help="compile the UNet with torch.compile: the first image of each size takes longer "
                              "(compiling), the following ones are faster")


def apply_runtime_arguments(args: argparse.Namespace) -> None:
    from inkwash.nodes.runtime import devices, unet_compile

    devices.set_precision(getattr(args, "precision", "auto"))
    unet_compile.set_compile(getattr(args, "compile", False))


def _existing_file(value: str | None, flag: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ServeRefused(f"{flag}: no such file: {path}")
    return path


def _directory(value: str | None, flag: str, must_exist: bool = False) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ServeRefused(f"{flag}: {path} is not a folder")
    if must_exist and not path.is_dir():
        raise ServeRefused(f"{flag}: no such folder: {path}")
    return path


def resolve(args: argparse.Namespace, iterations: int | None = None) -> ServeOptions:
    """Check the parsed `inkwash serve` arguments; ServeRefused says what is wrong and how to fix it.
    `iterations` overrides the PBKDF2 cost of hashing --auth passwords (tests)."""
    host = args.listen if args.listen is not None else DEFAULT_HOST
    host = host.strip().strip("[]") or ALL_INTERFACES  # `--listen ""` is all interfaces, as uvicorn's ""
    if not 0 < args.port < 65536:
        raise ServeRefused(f"--port must be between 1 and 65535, not {args.port}")

    if (args.tls_keyfile is None) != (args.tls_certfile is None):
        raise ServeRefused("--tls-keyfile and --tls-certfile go together: give both for HTTPS, or neither")
    tls_keyfile = _existing_file(args.tls_keyfile, "--tls-keyfile")
    tls_certfile = _existing_file(args.tls_certfile, "--tls-certfile")
    auth_file = _existing_file(args.auth_file, "--auth-file")

    auth = args.auth if args.auth is not None else os.environ.get(AUTH_ENVIRONMENT) or None
    try:
        credentials = Credentials.from_auth_args(
            auth, auth_file, **({"iterations": iterations} if iterations else {}))
    except CredentialsError as exc:
        raise ServeRefused(str(exc)) from None

    options = ServeOptions(
        host=host, port=args.port, credentials=credentials, insecure_no_auth=args.insecure_no_auth,
        tls_keyfile=tls_keyfile, tls_certfile=tls_certfile, allowed_hosts=tuple(args.allowed_host or ()),
        models_dir=_directory(args.models_dir, "--models-dir", must_exist=True),
        output_dir=_directory(args.output_dir, "--output-dir"),
        input_dir=_directory(args.input_dir, "--input-dir"),
        data_dir=_directory(args.data_dir, "--data-dir"),
        temp_dir=_directory(getattr(args, "temp_dir", None), "--temp-dir"),
        extra_model_paths=_existing_file(args.extra_model_paths, "--extra-model-paths"),
        api_docs=getattr(args, "api_docs", False))

    options.preview_method = getattr(args, "preview_method", preview_method.DEFAULT)
    if options.exposed and credentials is None:
        where = "all network interfaces" if is_wildcard(host) else host
        if not args.insecure_no_auth:
            raise ServeRefused(
                f"refusing to listen on {where} without a password: anyone who can reach this machine "
                "could generate images, read your outputs and upload files. Add --auth USER:PASS or "
                "--auth-file FILE (lines from `inkwash hash-password USER`), or pass --insecure-no-auth "
                "if this network is trusted.")
        options.warnings.append(f"listening on {where} WITHOUT authentication (--insecure-no-auth): "
                                "anyone on your network can use this server")
    if options.exposed and args.auth:
        options.warnings.append(f"--auth shows its password to every user of this machine (ps, /proc); "
                                f"use --auth-file (lines from `inkwash hash-password USER`) or {AUTH_ENVIRONMENT}")
    if options.exposed and credentials is not None and tls_certfile is None:
        options.warnings.append("passwords and images travel unencrypted over the network; "
                                "add --tls-keyfile/--tls-certfile for HTTPS")
    return options
