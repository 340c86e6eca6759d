"""Connection-level attacks on a real server on 127.0.0.1: slowloris headers, stalled bodies, idle
sockets and connection floods are closed by the server, which keeps answering everyone else."""
import os
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inkwash.webui.connection_limits import _AcceptErrorFilter, guarded_protocol
from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import uvicorn_options


async def hello(request):
    await request.body()
    return PlainTextResponse("hello")


@pytest.fixture
def server():
    """A guarded uvicorn on a free loopback port: 1 s deadlines, 8 connections per client, 12 in all."""
    protocol = guarded_protocol(header_timeout=1.0, body_idle_timeout=1.0, per_client=8, total=12)
    app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=protocol, log_level="error", lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    port = running.servers[0].sockets[0].getsockname()[1]
    yield port, protocol
    running.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def closed_by_server(sock: socket.socket, within: float = 4.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def answers(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello"


def test_slowloris_headers_are_cut_at_the_header_deadline(server):
    port, protocol = server
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    cut = False
    for _ in range(12):  # a header line every 0.25 s would keep it open forever without a deadline
        try:
            sock.sendall(b"X-Trickle: 1\r\n")
        except OSError:
            cut = True
            break
        time.sleep(0.25)
    assert cut or closed_by_server(sock, 1.0)
    sock.close()
    assert answers(port)


def test_an_idle_socket_and_a_stalled_body_are_closed(server):
    port, _ = server
    idle = connect(port)
    stalled = connect(port)
    stalled.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789")
    assert closed_by_server(idle) and closed_by_server(stalled)
    idle.close()
    stalled.close()
    assert answers(port)


def test_connections_are_capped_per_client_and_their_sockets_released(server):
    port, protocol = server
    fds_before = len(os.listdir("/proc/self/fd"))
    flood = [connect(port) for _ in range(20)]
    time.sleep(0.3)
    assert sum(protocol.open_by_client.values()) <= 8  # the rest were closed on arrival
    refused = [sock for sock in flood if closed_by_server(sock, 0.2)]
    assert len(refused) >= 12
    # the ones let in send nothing: their header deadline closes them too
    assert all(closed_by_server(sock) for sock in flood if sock not in refused)
    for sock in flood:
        sock.close()
    time.sleep(0.2)
    assert sum(protocol.open_by_client.values()) == 0
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2  # the server holds no socket of theirs
    assert answers(port)


def test_serve_uses_the_guarded_protocol():
    options = uvicorn_options(ServeOptions())
    assert options["http"].__name__ == "GuardedH11Protocol" and options["timeout_keep_alive"] == 5


def test_accept_errors_are_logged_at_most_once_per_interval():
    import logging

    accept_filter = _AcceptErrorFilter(interval=60)
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource",
                                 None, None) for _ in range(1000)]
    passed = [record for record in records if accept_filter.filter(record)]
    assert len(passed) == 1
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert accept_filter.filter(other)
