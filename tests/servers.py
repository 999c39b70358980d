"""Test helpers for the Dagster webserver tests: a free port, GraphQL, waiting for the server to answer."""

import json
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    """Poll /server_info until it answers; fail with the server's output if it exits or times out."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                output = server.stdout.read() if server.poll() is not None and server.stdout else ""
                raise AssertionError(f"the Dagster webserver did not start on port {port}:\n{output}")
            time.sleep(1)
