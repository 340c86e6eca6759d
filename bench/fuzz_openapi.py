"""Schemathesis against the app's own OpenAPI description: starts `inkwash serve --api-docs` on a free
loopback port with empty model, input and output folders of its own, runs schemathesis over every
operation with the `not_a_server_error` check (no 5xx), prints its summary, and stops the server.

Not part of the test suite (it takes minutes). Schemathesis is not a dependency of Inkwash; give its
executable, e.g. from a separate virtual environment:

  python -m venv /tmp/st && /tmp/st/bin/pip install schemathesis
  python bench/fuzz_openapi.py --schemathesis /tmp/st/bin/schemathesis [--max-examples 20]
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemathesis", default="schemathesis", help="the schemathesis executable")
    parser.add_argument("--max-examples", type=int, default=20, help="examples per operation (default 20)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inkwash-fuzz-"))
    for name in ("models", "input", "output", "data"):
        (root / name).mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "inkwash.webui.cli", "serve", "--api-docs", "--port", str(port),
         "--models-dir", str(root / "models"), "--input-dir", str(root / "input"),
         "--output-dir", str(root / "output"), "--data-dir", str(root / "data")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print(f"the server did not start; see {root / 'server.log'}")
                return 1
            time.sleep(0.5)
        result = subprocess.run(
            [args.schemathesis, "run", f"{base}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", str(args.max_examples), "--generation-deterministic", "--request-timeout", "60"],
            cwd=root)  # schemathesis keeps its own files in the working directory
        alive = httpx.get(f"{base}/queue", timeout=10).status_code == 200
        print(f"server still serving afterwards: {alive}; server log: {root / 'server.log'}")
        return result.returncode or (0 if alive else 1)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
