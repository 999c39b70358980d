"""`lookups worker`'s arguments and the broker URL as messages print it (no broker, no worker started here:
tests/integration/cluster/)."""

from __future__ import annotations

import pytest

from lookups.pipeline.cli import _redacted, build_parser, main


def test_worker_arguments():
    args = build_parser().parse_args(["worker"])
    assert args.queue is None and args.concurrency == 1 and args.broker is None and args.name is None  # both queues
    args = build_parser().parse_args(["worker", "--queue", "gpu", "--queue", "dagster", "--concurrency", "3", "--name", "box1"])
    assert args.queue == ["gpu", "dagster"] and args.concurrency == 3 and args.name == "box1"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--queue", "cpu"])


def test_a_bad_concurrency_is_one_line(capsys):
    assert main(["worker", "--concurrency", "0"]) == 2
    assert capsys.readouterr().err.strip() == "lookups: --concurrency 0 is not a number of steps at once: give 1 or more."


def test_passwords_are_masked():
    assert _redacted("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert _redacted("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert _redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
