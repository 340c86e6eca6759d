"""The `inkwash` command line.

`inkwash serve [--listen [HOST]] [--port 7860] [--auth USER:PASS | --auth-file FILE] ...` starts the app:
the browser UI, the graph editor and both APIs on one port. `inkwash hash-password USER` prints a line
for --auth-file.

`inkwash run WORKFLOW.json [--set NODE_ID.INPUT=VALUE ...]` runs a workflow headless and prints one JSON
event per line (the same events, named as ComfyUI's websocket messages, that every other door gets).
Exit status: 0 success, 1 execution failed or was interrupted, 2 the workflow is invalid.
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
    """Read an API-format workflow from a .json file, or from the `prompt` chunk of a PNG."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG"):
        from inkwash.nodes.formats.png_metadata import read_png_metadata

        prompt = read_png_metadata(data).get("prompt")
        if prompt is None:
            raise ValueError(f"{path} carries no workflow (no 'prompt' text chunk)")
        return prompt
    return data.decode("utf-8", errors="replace")


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

    folders.configure(models_dir=args.models_dir, output_dir=args.output_dir, input_dir=args.input_dir,
                      extra_model_paths=args.extra_model_paths)
    try:
        source = load_workflow(Path(args.workflow))
    except (OSError, ValueError) as exc:
        emit("validation_error", {"error": {"type": "invalid_prompt", "message": str(exc)}, "node_errors": {}})
        return EXIT_INVALID
    if args.set:
        try:
            source = json.loads(source) if isinstance(source, str) else source
            if not isinstance(source, dict):
                raise ValueError("the workflow is not a JSON object")
            apply_assignments(source, args.set)
        except (ValueError, KeyError) as exc:
            emit("validation_error", {"error": {"type": "invalid_prompt", "message": str(exc).strip("'\"")},
                                      "node_errors": {}})
            return EXIT_INVALID

    from inkwash.nodes.executor import Executor
    from inkwash.nodes.registry import core_nodes

    executor = Executor(core_nodes())
    validation = executor.validate(source)
    if not validation.ok:
        emit("validation_error", validation.response())
        return EXIT_INVALID
    # Ctrl-C interrupts the run cleanly (the executor stops between nodes or sampler steps).
    previous = signal.signal(signal.SIGINT, lambda *_: executor.interrupt())
    try:
        result = executor.execute(validation, on_event=emit)
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_OK if result.status == "success" else EXIT_FAILED


def serve_command(args: argparse.Namespace) -> int:
    from .serve_options import ServeRefused, resolve

    try:
        options = resolve(args)
    except ServeRefused as refusal:
        print(f"inkwash: not starting: {refusal}", file=sys.stderr)
        return EXIT_INVALID
    for warning in options.warnings:
        print(f"inkwash: warning: {warning}", file=sys.stderr)
    from .server import serve

    serve(options)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from .auth import add_hash_password_arguments, hash_password_command
    from .serve_options import add_serve_arguments

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
    run.set_defaults(handler=run_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
