"""The `inkwash` command line.

`inkwash serve [--listen [HOST]] [--port 7860] [--auth USER:PASS | --auth-file FILE] ...` starts the app:
the browser UI, the graph editor and both APIs on one port. `inkwash hash-password USER` prints a line
for --auth-file.

`inkwash run WORKFLOW.json [--set NODE_ID.INPUT=VALUE ...]` runs a workflow headless and prints one JSON
event per line (the same events, named as ComfyUI's websocket messages, that every other door gets).
Exit status: 0 success, 1 execution failed or was interrupted, 2 the workflow is invalid.

`inkwash pull URL|OWNER/REPO/FILE [--folder checkpoints] [--sha256 HEX] [--name NAME]` downloads a model
into its folder (webui/model_downloads.py). Exit status: 0 downloaded, 1 the download failed (network, wrong
sha256), 2 refused (unsafe name, unknown or unclear folder, file already there).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def parse_assignment(text: str) -> tuple[str, str, object]:
    """`NODE_ID.INPUT=VALUE` -> (node_id, input, value); the value is JSON when it parses, else a string."""
    key, sep, raw = text.partition("=")
    node_id, dot, input_name = key.rpartition(".")
    if not sep or not dot or not node_id or not input_name:
        raise argparse.ArgumentTypeError(f"--set expects NODE_ID.INPUT=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id, input_name, value


def load_workflow(path: Path) -> object:
    """Read a workflow from a .json file (API or editor format), or from a PNG: its `prompt` chunk,
    else its editor-format `workflow` chunk."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG"):
        from inkwash.nodes.formats.png_metadata import read_png_metadata

        metadata = read_png_metadata(data)
        found = metadata.get("prompt") or metadata.get("workflow")
        if found is None:
            raise ValueError(f"{path} carries no workflow (no 'prompt' or 'workflow' text chunk)")
        return found
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text  # validation reports it as not JSON, in ComfyUI's shape


def as_api_format(source: object, registry: dict) -> object:
    """An editor-format workflow converted as ComfyUI's frontend converts it; anything else as it is."""
    from inkwash.nodes.registry import object_info

    from .ui_workflow import api_workflow

    return api_workflow(source, object_info(registry))


def apply_assignments(workflow: dict, assignments: list[tuple[str, str, object]]) -> None:
    for node_id, input_name, value in assignments:
        node = workflow.get(node_id)
        if not isinstance(node, dict):
            raise KeyError(f"--set {node_id}.{input_name}: the workflow has no node {node_id!r}")
        node.setdefault("inputs", {})[input_name] = value


def emit(event: str, data: dict) -> None:
    data = {k: v for k, v in data.items() if k != "preview"} if event == "progress" else data
    print(json.dumps({"type": event, "data": data}, default=str), flush=True)


def run_command(args: argparse.Namespace) -> int:
    from inkwash.nodes import folders

    from .serve_options import apply_device_options, device_arguments

    apply_device_options(**device_arguments(args))
    folders.configure(models_dir=args.models_dir, output_dir=args.output_dir, input_dir=args.input_dir,
                      extra_model_paths=args.extra_model_paths)
    try:
        source = load_workflow(Path(args.workflow))
    except (OSError, ValueError) as exc:
        emit("validation_error", {"error": {"type": "invalid_prompt", "message": str(exc)}, "node_errors": {}})
        return EXIT_INVALID
    from inkwash.nodes.executor import Executor
    from inkwash.nodes.registry import core_nodes
    from inkwash.nodes.runtime import memory_manager

    from .ui_workflow import UIWorkflowError

    registry = core_nodes()
    try:
        source = as_api_format(source, registry)
    except UIWorkflowError as exc:
        emit("validation_error", {"error": {"type": "invalid_prompt", "message": str(exc)}, "node_errors": {}})
        return EXIT_INVALID
    if args.set:
        try:
            if not isinstance(source, dict):
                raise ValueError("the workflow is not a JSON object")
            apply_assignments(source, args.set)
        except (ValueError, KeyError) as exc:
            emit("validation_error", {"error": {"type": "invalid_prompt", "message": str(exc).strip("'\"")},
                                      "node_errors": {}})
            return EXIT_INVALID

    executor = Executor(registry)
    memory_manager.shared().watch(executor)
    validation = executor.validate(source)
    if not validation.ok:
        emit("validation_error", validation.response())
        return EXIT_INVALID
    # Ctrl-C interrupts the run cleanly (the executor stops between nodes or sampler steps).
    previous = signal.signal(signal.SIGINT, lambda *_: executor.interrupt())

    def emit_until_the_end(event: str, data: dict) -> None:
        if not (event == "executing" and data.get("node") is None):
            emit(event, data)

    try:
        result = executor.execute(validation, on_event=emit_until_the_end)
    finally:
        signal.signal(signal.SIGINT, previous)
    # ComfyUI's order: execution_success / _error / _interrupted, then `executing` null, in every case.
    emit("executing", {"node": None, "display_node": None, "prompt_id": result.prompt_id})
    return EXIT_OK if result.status == "success" else EXIT_FAILED


def serve_command(args: argparse.Namespace) -> int:
    from .serve_options import ServeRefused, apply_device_options, device_options, resolve

    try:
        options = resolve(args)
    except ServeRefused as refusal:
        print(f"inkwash: not starting: {refusal}", file=sys.stderr)
        return EXIT_INVALID
    for warning in options.warnings:
        print(f"inkwash: warning: {warning}", file=sys.stderr)
    apply_device_options(**device_options(options))
    from .server import serve

    serve(options)
    return EXIT_OK


def pull_command(args: argparse.Namespace) -> int:
    from inkwash.nodes import folders

    from .model_downloads import DownloadError, DownloadProgress, DownloadRefused, download

    def show(progress: DownloadProgress) -> None:
        if progress.status == "failed":
            return  # said once, below, with the reason
        done = f"{progress.downloaded / 2**20:.1f} MiB"
        if progress.total:
            done += f" of {progress.total / 2**20:.1f} MiB ({100 * progress.downloaded / progress.total:.0f}%)"
        line = f"{progress.status} {progress.folder}/{progress.name or '?'}: {done}"
        if sys.stderr.isatty():  # one line, redrawn while downloading
            print(f"\r{line}\033[K", end="" if progress.status == "downloading" else "\n", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    configured = folders.configure(models_dir=args.models_dir)
    try:
        path = download(args.source, configured, args.folder, name=args.name, sha256=args.sha256, on_progress=show)
    except DownloadRefused as exc:
        print(f"inkwash pull: refused: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except DownloadError as exc:
        print(f"inkwash pull: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninkwash pull: interrupted; the same command continues the download", file=sys.stderr)
        return EXIT_FAILED
    print(path)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from .auth import add_hash_password_arguments, hash_password_command
    from .serve_options import add_device_arguments, add_serve_arguments

    parser = argparse.ArgumentParser(prog="inkwash", description="Inkwash: a Stable Diffusion studio on a node graph")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the app: browser UI, graph editor, ComfyUI and A1111 APIs")
    add_serve_arguments(serve)
    serve.set_defaults(handler=serve_command)
    hash_password = commands.add_parser("hash-password", help="print a USER:HASH line for --auth-file "
                                                              "(the password is read from the terminal)")
    add_hash_password_arguments(hash_password)
    hash_password.set_defaults(handler=hash_password_command)
    run = commands.add_parser("run", help="run a workflow (API-format JSON, or a PNG that carries one) headless")
    run.add_argument("workflow", help="workflow file (.json in ComfyUI's API format, or a PNG saved by Inkwash)")
    run.add_argument("--set", action="append", type=parse_assignment, default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override a node input before running (repeatable); VALUE is JSON or plain text")
    run.add_argument("--output-dir", help="where images are written (default: output/)")
    run.add_argument("--input-dir", help="where LoadImage looks (default: input/)")
    run.add_argument("--models-dir", help="model folders root (default: models/)")
    run.add_argument("--extra-model-paths", help="an extra_model_paths.yaml adding an A1111/ComfyUI install")
    add_device_arguments(run)
    run.set_defaults(handler=run_command)
    pull = commands.add_parser("pull", help="download a model from a URL or a Hugging Face OWNER/REPO/FILE")
    pull.add_argument("source", help="a URL, or OWNER/REPO/PATH on the Hugging Face hub (HF_ENDPOINT is honoured)")
    pull.add_argument("--folder", help="model folder: checkpoints, loras, vae, controlnet, embeddings, "
                                       "upscale_models, ... (guessed from the file name only when obvious)")
    pull.add_argument("--sha256", help="the file's expected sha256; a mismatch removes the download")
    pull.add_argument("--name", help="file name in the folder (default: the URL's or the server's)")
    pull.add_argument("--models-dir", help="model folders root (default: models/)")
    pull.set_defaults(handler=pull_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
