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

from ..nodes.device_choices import PRECISIONS, VRAM_MODES
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
    vram: str = "auto"  # the memory manager's mode
    vram_budget_gb: float | None = None  # GPU memory the memory manager may fill
    precision: str = "auto"  # the models' dtype (nodes/runtime/devices.py)
    compile: bool = False  # torch.compile the UNet
    workers: str = "local"  # "local": the in-process worker; "ray": Ray actors (webui/workers/ray_worker.py)
    ray_workers: int | None = None  # --ray-workers: local CPU workers (None: one per local GPU)
    ray_address: str | None = None  # --ray: join this cluster instead of starting a local runtime

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
    workers = parser.add_argument_group("workers")
    workers.add_argument("--workers", choices=("local", "ray"), default="local",
                         help="where jobs run: in this process (default), or on Ray workers: a local Ray "
                              "runtime with one worker per GPU (see --ray-workers, --ray)")
    workers.add_argument("--ray-workers", type=int, metavar="N",
                         help="with --workers ray: N CPU workers instead of one per local GPU")
    workers.add_argument("--ray", metavar="ADDRESS", dest="ray_address",
                         help="join the Ray cluster at ADDRESS (auto, or HOST:PORT) and place one worker on "
                              "every GPU it has (one on a node without GPUs); implies --workers ray")
    parser.add_argument("--preview-method", choices=preview_method.METHODS, default=preview_method.DEFAULT,
                        help="sampler previews sent to ComfyUI clients, unless a prompt asks otherwise "
                             f"(default: {preview_method.DEFAULT}, as ComfyUI)")
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--vram, --vram-budget, --precision and --compile, for `inkwash serve` and `inkwash run`."""
    memory = parser.add_argument_group("GPU memory")
    memory.add_argument("--vram", choices=VRAM_MODES, default="auto",
                        help="auto (default): move models between RAM and the GPU as needed, streaming one that "
                             "does not fit; high: keep every model on the GPU; normal: as auto; low: always "
                             "stream the UNet, and have the text encoder and VAE on the GPU only while they "
                             "run; cpu: run on the CPU")
    memory.add_argument("--vram-budget", type=_gigabytes, default=None, metavar="GB",
                        help="use at most this many GB of GPU memory (default: what the GPU has free)")
    models = parser.add_argument_group("models")
    models.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="dtype of the models: auto = fp16 on GPUs (the VAE in bf16 where the GPU supports "
                             "it) and fp32 on the CPU (default: auto). A half-precision VAE that gives NaN "
                             "moves to bf16/fp32 on its own.")
    models.add_argument("--compile", action="store_true",
                        help="compile the UNet with torch.compile: the first image of each size takes longer "
                             "(compiling), the following ones are faster")


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number of GB, got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expects a positive number of GB, got {text!r}")
    return value


def device_arguments(args: argparse.Namespace) -> dict:
    """The device options given on a command line, as apply_device_options takes them."""
    return {"vram": getattr(args, "vram", "auto"), "vram_budget_gb": getattr(args, "vram_budget", None),
            "precision": getattr(args, "precision", "auto"), "compile": getattr(args, "compile", False)}


def device_options(options: "ServeOptions") -> dict:
    """A server's device options, for this process and each of its workers."""
    return {"vram": options.vram, "vram_budget_gb": options.vram_budget_gb, "precision": options.precision,
            "compile": options.compile}


def apply_device_options(vram: str = "auto", vram_budget_gb: float | None = None, precision: str = "auto",
                         compile: bool = False) -> None:
    """Set up this process's device use (a Ray worker runs this too)."""
    apply_memory_options(vram, vram_budget_gb)
    from inkwash.nodes.runtime import devices, unet_compile

    devices.set_precision(precision)
    unet_compile.set_compile(compile)


def apply_memory_options(vram: str = "auto", vram_budget_gb: float | None = None) -> None:
    """Hand --vram / --vram-budget to the memory manager (nothing to do, and torch not imported, for
    the defaults)."""
    if vram == "auto" and vram_budget_gb is None:
        return
    from inkwash.nodes.runtime import memory_manager

    memory_manager.configure(vram, vram_budget_gb)


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
    options.vram = getattr(args, "vram", "auto")
    options.vram_budget_gb = getattr(args, "vram_budget", None)
    options.precision = getattr(args, "precision", "auto")
    options.compile = getattr(args, "compile", False)
    options.ray_address = getattr(args, "ray_address", None) or None
    options.ray_workers = getattr(args, "ray_workers", None)
    options.workers = "ray" if options.ray_address else getattr(args, "workers", "local")
    if options.ray_workers is not None:
        if options.workers != "ray":
            raise ServeRefused("--ray-workers goes with --workers ray")
        if options.ray_address:
            raise ServeRefused("--ray-workers starts a local Ray runtime; --ray joins a cluster: give one of them")
        if options.ray_workers < 1:
            raise ServeRefused(f"--ray-workers must be at least 1, not {options.ray_workers}")
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
