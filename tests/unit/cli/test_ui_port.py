"""`lookups ui --port P` on a port it cannot listen on is one line naming the port and `--port`, exit 2, before the
instance subprocess or `dagster dev` starts (which would report the bind error only in its logs, its daemon
launching runs meanwhile). The UI started for real: tests/integration/reliability/test_ui_signals.py."""

import socket
import subprocess

import pytest

from lookups.pipeline import cli


@pytest.fixture
def nothing_starts(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"started {args[:2]} although the port is busy")

    monkeypatch.setattr(subprocess, "call", refuse)
    monkeypatch.setattr(cli.os, "execve", refuse)


@pytest.fixture
def busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_busy_port_is_one_line_and_starts_nothing(nothing_starts, busy_port, capsys, data_folder):
    code = cli.main(["ui", "--port", str(busy_port)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("lookups: ") and err.count("\n") == 1, err
    assert f"127.0.0.1:{busy_port}" in err and "in use" in err and "--port" in err, err
    assert not (data_folder / "dagster_home").exists()  # nothing was started, not even the instance's folder


def test_a_free_port_passes_the_check():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cli.check_port("127.0.0.1", port)


@pytest.mark.parametrize("host, port, words", [("127.0.0.1", 70000, "1 to 65535"), ("no-such-host.invalid", 3000, "--host")])
def test_a_port_or_host_that_cannot_be_is_one_line(nothing_starts, capsys, host, port, words):
    assert cli.main(["ui", "--host", host, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
