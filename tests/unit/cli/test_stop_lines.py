"""What `lookups run` says when stopped or out of disk, one line each (pipeline/cli.py; the real command is driven
in tests/integration/reliability/test_stops.py)."""

from __future__ import annotations

import errno
import signal

import pytest

from lookups.pipeline import cli


@pytest.mark.parametrize(
    ("outcome", "killed", "said"),
    [
        ({"stopped": "SIGTERM", "run_id": "r1", "status": "CANCELED"}, False,
         "stopped by SIGTERM; the run r1 is marked canceled; results computed so far are kept, rerun to continue"),
        ({"stopped": "SIGTERM", "run_id": None, "status": None}, False, "stopped by SIGTERM before the run started; rerun to start it"),
        ({"stopped": "SIGTERM", "run_id": "r1", "status": "SUCCESS"}, False,
         "stopped by SIGTERM after the run r1 ended (success); results computed so far are kept, rerun to continue"),
        ({"run_id": "r1", "model_id": "m"}, False, "stopped by SIGTERM after the run r1 ended; its results are kept"),
        ({}, True, "stopped by SIGTERM; the run did not stop within 10 s and was killed: the next start marks it failed; "
         "results computed so far are kept, rerun to continue"),
    ],
    ids=["canceled", "before", "ended", "ended-normally", "killed"],
)
def test_a_stop_is_one_line(outcome, killed, said):
    assert cli._stopped_line(signal.SIGTERM, outcome, killed) == said


def test_the_runner_outcome_of_a_full_disk_is_one_line(capsys, data_folder):
    message = "the data folder /x is full (0.1 MB free; ...): free space or point LOOKUPS_DATA_DIR at a bigger disk, then run again"
    assert cli._report_run(1, {"disk_full": message, "run_id": "r1", "failures": [["corpus", "[Errno 28] No space left on device"]]}) == 1
    assert capsys.readouterr().err == f"lookups: {message}; the run r1 is marked failed, results computed so far are kept\n"
    assert cli._report_run(1, {"disk_full": message, "run_id": None, "marked": False}) == 1
    assert capsys.readouterr().err.endswith("; the run is marked failed at the next start, results computed so far are kept\n")


def test_a_full_disk_in_the_command_itself_is_one_line(monkeypatch, capsys, data_folder):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(data_folder / "dagster_home" / "dagster.yaml"))

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_for(full))
    assert cli.main(["paths"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lookups: the data folder {data_folder} is full (") and err.count("\n") == 1, err


def test_ctrl_c_outside_a_run_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_for(interrupted))
    assert cli.main(["paths"]) == 130
    assert capsys.readouterr().err == "lookups: stopped by SIGINT\n"


def _parser_for(func):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_subparsers(dest="command").add_parser("paths").set_defaults(func=func)
    return parser
