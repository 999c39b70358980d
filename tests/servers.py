"""Test helpers for tests that need servers: the Dagster webserver (a free port, GraphQL, waiting for it),
a real OpenAI-compatible server (``llama_cpp.server`` serving the embedded SmolLM2 GGUF) and a fault-injecting
proxy in front of it."""

import http.server
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 120, path: str = "/server_info", what: str = "the Dagster webserver") -> None:
    """Poll ``path`` until it answers; fail with the server's output if it exits or times out."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except OSError as err:
            if server.poll() is not None or time.time() > deadline:
                output = server.stdout.read() if server.poll() is not None and server.stdout else ""
                raise AssertionError(f"{what} did not start on port {port}:\n{output}") from err
            time.sleep(1)


def wait_while_progressing(poll, stall_s: float, what: str, interval_s: float = 3.0):
    """Call ``poll()`` -> ``(done, progress, detail)`` until ``done``; fail only when ``progress`` (any value
    that changes as work gets done, e.g. steps finished) has stayed the same for ``stall_s`` seconds, so a slow
    or shared machine is never a failure while work goes on. Returns the last ``detail``."""
    last, since = object(), time.monotonic()
    while True:
        done, progress, detail = poll()
        if done:
            return detail
        if progress != last:
            last, since = progress, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise AssertionError(f"{what}: no progress in {stall_s:.0f} s (last: {progress}); {detail}")
        time.sleep(interval_s)


def embedded_gguf() -> Path:
    from lookups.pipeline.inputs.checkpoints import EMBEDDED_GGUF_FILE, EMBEDDED_GGUF_PACKAGE

    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_FILE


LLAMA_MODEL_ALIAS = "smollm2-135m-instruct-q4"


class LlamaServer:
    """A running ``python -m llama_cpp.server``: its base URL, and ``check()``, which fails with the exit
    status and the last lines of its log once the process has died (a crashing build dies silently: the
    client only sees refused connections)."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.log = process, log
        self.url = f"http://127.0.0.1:{port}/v1"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def death(self) -> str | None:
        """None while the server runs; else what a failing test should say about it."""
        status = self.process.poll()
        if status is None:
            return None
        signal_note = f" (killed by signal {-status})" if status < 0 else ""
        return (f"llama_cpp.server died: exit status {status}{signal_note}. A build made for another CPU "
                f"crashes this way (see the Makefile's LLAMA_CMAKE_ARGS). Last lines of {self.log}:\n{self.log_tail()}")

    def check(self) -> None:
        death = self.death()
        if death:
            raise AssertionError(death)

    def complete(self, prompt: str = "Say hello.", max_tokens: int = 8) -> dict:
        """One real chat completion; fails with the server's death or its answer."""
        body = json.dumps({"model": LLAMA_MODEL_ALIAS, "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        request = urllib.request.Request(f"{self.url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except OSError as err:
            time.sleep(1)  # let a crashing process finish dying, so its status is known
            self.check()
            raise AssertionError(f"llama_cpp.server is running but its completion failed: {err}") from None


@contextmanager
def llama_server():
    """``python -m llama_cpp.server`` on 127.0.0.1 serving the embedded SmolLM2 GGUF; yields a LlamaServer."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--model_alias", LLAMA_MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false",
    ]
    # Output to a file: an unread pipe fills up with one log line per request and stalls the server.
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    server = LlamaServer(process, port, Path(log.name))
    try:
        try:
            wait_until_serving(port, process, timeout=120, path="/v1/models", what="llama_cpp.server")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{server.log_tail()}") from None
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


class FaultProxy:
    """An HTTP proxy in front of an OpenAI-compatible server that counts requests and, by ``mode``, forwards
    them ('pass'), answers 500 ('error'), hangs past any client timeout ('hang'), or answers well-formed
    chat completions whose text is nonsense ('nonsense')."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.counts: dict[str, int] = {}
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _relay(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                proxy.counts[proxy.mode] = proxy.counts.get(proxy.mode, 0) + 1
                if proxy.mode == "error" and method == "POST":
                    return self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
                if proxy.mode == "hang" and method == "POST":
                    time.sleep(30)
                    return self._send(504, {"error": {"message": "too late"}})
                if proxy.mode == "nonsense" and method == "POST":
                    return self._send(200, {
                        "id": "x", "object": "chat.completion", "created": 0, "model": LLAMA_MODEL_ALIAS,
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "purple elephant dances"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                    })
                request = urllib.request.Request(self.upstream_url(), data=body, method=method, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        return self._send(response.status, json.loads(response.read()))
                except urllib.error.HTTPError as err:
                    return self._send(err.code, {"error": {"message": err.read().decode(errors="replace")}})

            def upstream_url(self):
                return proxy.upstream + self.path.removeprefix("/v1")

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._relay("GET")

            def do_POST(self):
                self._relay("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
