"""The `lookups` command: run the main job through Dagster, print a summary, start the UI, show paths."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    DEFAULT_QUEUE,
    EMBEDDED_CORPUS,
    EMBEDDED_MODEL,
    GEMMA3_MODEL,
    GPU_QUEUE,
    FolderError,
    celery_settings,
    check_run_settings,
    check_writable,
    dagster_home_dir,
    data_dir,
    database_path,
    full_disk_message,
    load_settings_file,
    looks_full,
    not_writable,
    repo_root,
)
from lookups.pipeline.inputs import planted
from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.store.queries import QueryError
from lookups.pipeline.store.store import Store


def dagster_home() -> Path:
    """Dagster's instance lives in the data folder; its dagster.yaml is the repository's, copied in. A data folder
    that cannot be written (a read-only mount) is one line naming it, before any process starts."""
    home = dagster_home_dir()
    try:
        check_writable(data_dir())
        home.mkdir(parents=True, exist_ok=True)
        template = repo_root() / "dagster.yaml"
        if template.exists():
            shutil.copyfile(template, home / "dagster.yaml")
    except FolderError:
        raise
    except OSError as err:
        raise not_writable(Path(err.filename or home), err) from err
    return home


def _dagster_env() -> dict:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home())
    env["LOOKUPS_DATA_DIR"] = str(data_dir())
    return env


def run_config_from_args(args: argparse.Namespace) -> dict:
    """Run config for the main job: a YAML/JSON file first, then the flags on top."""
    from lookups.pipeline import steps  # the steps import torch: only the commands that run them pay for it

    ops = load_settings_file(args.config, "--config ") if args.config else {}
    check_run_settings(ops, steps.settings_of_steps(), f"--config {args.config}")

    def put(op: str, key: str, value) -> None:
        if value is not None:
            ops.setdefault(op, {}).setdefault("config", {})[key] = value if value != 0 or key != "max_documents" else None

    put("model", "name", args.model)  # a relative path: the runner works here, and stores the key absolute (sources.normalize_key)
    put("corpus", "source", args.corpus)
    put("prompt_set", "max_documents", args.max_documents)
    put("neuron_catalog", "neurons_per_layer", args.neurons_per_layer)
    put("neuron_catalog", "last_layers", args.last_layers)
    put("explanations", "backend", args.explainer)
    put("explanations", "max_calls", args.max_llm_calls)
    if args.model == planted.PLANTED_KEY:  # the planted circuit's own settings, unless given
        for op, values in planted.RUN_SETTINGS.items():
            config = ops.setdefault(op, {}).setdefault("config", {})
            for key, value in values.items():
                config.setdefault(key, value)
    check_run_settings(ops, steps.settings_of_steps(), "the command's flags")
    return {"ops": ops}


#: After SIGINT or SIGTERM, how long the runner gets to mark its run canceled and exit (it gives the step in
#: progress 5 s: assets/stopping.py) before `lookups run` kills its process group.
STOP_KILL_AFTER_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """SIGINT or SIGTERM ended the command; the message says what became of the run."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class _RunnerSignals:
    """SIGINT and SIGTERM while `lookups run` runs: forwarded to the runner while it runs (it marks its run
    canceled and exits), a ``Stopped`` before it starts and after it ended."""

    def __init__(self):
        self.signum: int | None = None
        self.pid: int | None = None  # the runner's, from its start until it is reaped
        self.started = False

    def __enter__(self) -> _RunnerSignals:
        self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.pid is None:
            raise Stopped(signum, f"stopped by {name} {'after the run ended' if self.started else 'before the run started'}")
        if self.signum is None:
            self.signum = signum
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def start(self, cmd: list[str], env: dict) -> subprocess.Popen:
        """The runner in its own session (its process group is all it starts, which `wait` kills at the end), with
        SIGINT and SIGTERM blocked until its handlers are in place: one forwarded while it imports is not lost
        (assets/stopping.py)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:  # in the caller's folder: paths in messages are the ones the user gave
            proc = subprocess.Popen([*cmd, "--parent-pid", str(os.getpid())], env=env, start_new_session=True)
            self.pid, self.started = proc.pid, True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a signal that came meanwhile is handled (forwarded) now
        return proc

    def wait(self, proc: subprocess.Popen) -> tuple[int, bool]:
        """(exit code, killed): the runner's end; after a stop signal, its group killed if it outlives
        ``STOP_KILL_AFTER_S``. Whatever it left in its group is killed before it is reaped (its group id stays its own)."""
        deadline, killed = None, False
        while not _exited(proc):
            if self.signum is not None and not killed:
                deadline = deadline or time.monotonic() + STOP_KILL_AFTER_S
                if time.monotonic() > deadline:
                    _kill_group(proc.pid)
                    killed = True
            time.sleep(0.1)
        _kill_group(proc.pid)
        self.pid = None
        return proc.wait(), killed


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the runner has exited, without reaping it where the OS allows (so its pid stays its group's id)."""
    if hasattr(os, "waitid"):
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return proc.poll() is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stopped_line(signum: int, outcome: dict, killed: bool) -> str:
    """What a stop did, in one line."""
    said = f"stopped by {signal.Signals(signum).name}"
    kept = "results computed so far are kept, rerun to continue"
    run_id, status = outcome.get("run_id"), outcome.get("status")
    if "stopped" not in outcome:  # the runner wrote no stop outcome: killed, or it had ended the run just before
        if killed:
            return f"{said}; the run did not stop within {STOP_KILL_AFTER_S:.0f} s and was killed: the next start marks it failed; {kept}"
        if run_id:
            return f"{said} after the run {run_id} ended; its results are kept"
        return f"{said}; the runner ended without saying how: the next start marks an unfinished run failed; {kept}"
    if run_id is None:
        return f"{said} before the run started; rerun to start it"
    if status == "CANCELED":
        return f"{said}; the run {run_id} is marked canceled; {kept}"
    if status in ("SUCCESS", "FAILURE"):
        return f"{said} after the run {run_id} ended ({status.lower()}); {kept}"
    return f"{said}; the run {run_id} could not be marked canceled (status {status}): the next start marks it; {kept}"


def _redacted(url: str) -> str:
    """``url`` without its password (``redis://:secret@host`` -> ``redis://:***@host``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def check_broker(url: str, what: str) -> None:
    """A Celery broker (or result backend) that cannot be reached is one line naming it and the fix, before anything
    starts: otherwise a worker retries it forever and a run waits on it."""
    import redis

    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise LookupsError(f"{CELERY_BROKER_ENV}={_redacted(url)} is not a Redis URL: workers use Redis, e.g. redis://127.0.0.1:6379/0 (docs/workers.md).")
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
            client.ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise LookupsError(
            f"The Celery {what} {_redacted(url)} cannot be reached ({reason}): start Redis there (`redis-server`) "
            f"or set {CELERY_BROKER_ENV} to a broker that runs (docs/workers.md)."
        ) from err


def check_celery(settings: dict) -> None:
    """The broker and the result backend answer (one line each when not)."""
    check_broker(settings["broker"], "broker")
    if settings["backend"] != settings["broker"]:
        check_broker(settings["backend"], f"result backend ({CELERY_BACKEND_ENV})")


def warn_missing_workers(settings: dict) -> None:
    """Say, in one line, which queue no worker takes yet: the run waits for one, it does not fail."""
    from celery import Celery

    with contextlib.suppress(Exception):
        app = Celery(broker=settings["broker"], backend=settings["backend"])
        answers = app.control.inspect(timeout=1.0).active_queues() or {}
        taken = {queue["name"] for queues in answers.values() for queue in queues}
        missing = [q for q in (GPU_QUEUE, DEFAULT_QUEUE) if q not in taken]
        if missing:
            print(f"lookups: no worker takes the queue {' or '.join(missing)} yet; the run waits until one does "
                  f"(`lookups worker --queue {missing[0]}`, docs/workers.md)", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the main job through Dagster (the same definitions the UI uses), in a subprocess so that this
    package never imports Dagster, then print the summary. SIGINT and SIGTERM stop the run: it is marked
    canceled and every process it started ends (docs/operations.md, "Stopping a run, a full disk")."""
    with _RunnerSignals() as signals:
        run_config = run_config_from_args(args)
        if os.environ.get("LOOKUPS_EXECUTOR") == "celery":  # steps on workers: the broker first (docs/workers.md)
            settings = celery_settings()
            check_celery(settings)
            warn_missing_workers(settings)
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            cmd = [
                sys.executable, "-m", "lookups.assets.runner", "--run-config", json.dumps(run_config),
                "--log-level", args.log_level, "--result", str(result_path),
            ]
            code, killed = signals.wait(signals.start(cmd, _dagster_env()))
            outcome = json.loads(result_path.read_text()) if result_path.exists() else {}
        if signals.signum is not None:
            print(f"lookups: {_stopped_line(signals.signum, outcome, killed)}", file=sys.stderr)
            return 128 + signals.signum
        return _report_run(code, outcome)


def _report_run(code: int, outcome: dict) -> int:
    """What the runner's outcome says: a refusal, a full disk, the failed steps, or the summary."""
    if "error" in outcome:  # refused before any step ran: the message says what to fix
        print(f"lookups: {outcome['error']}", file=sys.stderr)
        return 2
    if "disk_full" in outcome:  # one line, wherever it surfaced (a step, Dagster's instance, the runner)
        run_id = outcome.get("run_id")
        if run_id and outcome.get("marked", True):  # a step failed: Dagster ended the run; or the runner marked it
            run = f"the run {run_id} is marked failed, "
        elif run_id or "marked" in outcome:  # the instance had no room to record even that
            run = f"the run {run_id + ' ' if run_id else ''}is marked failed at the next start, "
        else:  # no run had started
            run = ""
        print(f"lookups: {outcome['disk_full']}; {run}results computed so far are kept", file=sys.stderr)
        return 1
    if not outcome:
        print(f"lookups: the run stopped unexpectedly (exit code {code}); the lines above say why. Results so far stay in {database_path()}.", file=sys.stderr)
        return 1
    if code != 0 or "failures" in outcome:
        print("\nThe run failed:", file=sys.stderr)
        for step, message in outcome.get("failures", []):
            print(f"  {step}: {message}", file=sys.stderr)
        if not outcome.get("failures"):
            print("  no step failed: the run itself did (the lines above and its logs say why)", file=sys.stderr)
        print(
            f"\nFull logs: run {outcome.get('run_id', '?')} in the Dagster UI (`lookups ui`). The steps it finished are kept, and a rerun "
            "continues from them; until a run succeeds, readers see the last completed run (`lookups query --pending` shows this one's rows).",
            file=sys.stderr,
        )
        return 1
    print_summary(Store(lock_wait_s=10.0), outcome["model_id"], outcome["prompt_set_id"])
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print_summary(Store(lock_wait_s=10.0), args.model_id, args.prompt_set_id)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from lookups.pipeline.store.queries import check_output, describe_named, run_query, write_frame

    if args.list or not args.query:
        for name, description in describe_named().items():
            print(f"{name:<20} {description}")
        return 0
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QueryError(f"--param takes KEY=VALUE, got {item!r}.")
        params[key] = value
    for key in ("model_id", "prompt_set_id", "limit"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    output = check_output(args.output) if args.output else None  # before the query: never into what the pipeline writes
    frame = run_query(args.query, params, allow_files=args.allow_files, pending=args.pending)
    text = write_frame(frame, args.format, output)
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        print(f"{len(frame)} rows written to {args.output}", file=sys.stderr)
    return 0


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port the UI's webserver could not listen on (in use, or not allowed), before anything
    starts: `dagster dev` would report the bind error only in its logs while its daemon went on launching runs."""
    if not 0 < port < 65536:
        raise LookupsError(f"--port {port} is not a port: give one from 1 to 65535, e.g. --port 3000.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the webserver binds: a port in TIME_WAIT is free
            probe.bind((host, port))
    except OSError as err:
        why = err.strerror or str(err)
        if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
            raise LookupsError(f"The UI cannot listen on {host} ({why}): give an address of this machine with --host, e.g. --host 127.0.0.1.") from err
        if err.errno == errno.EADDRINUSE:
            why += ": another program (or another `lookups ui`) listens there"
        other = port + 1 if port < 65535 else 3000
        raise LookupsError(f"The UI cannot listen on {host}:{port} ({why}): choose another port with --port, e.g. --port {other}.") from err


def cmd_ui(args: argparse.Namespace) -> int:
    check_port(args.host, args.port)  # before the instance subprocess and `dagster dev`
    env = _dagster_env()
    if args.config:
        env["LOOKUPS_RUN_CONFIG"] = str(Path(args.config).resolve())  # its values are the defaults of every run: launchpad, automation, schedule
    code = subprocess.call([sys.executable, "-m", "lookups.assets.instance"], env=env)  # created under its lock, killed runs marked failed
    if code != 0:
        return code
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(repo_root() / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={env['DAGSTER_HOME']})", flush=True)
    # Become `dagster dev` rather than wait on it: a SIGTERM (a service manager's stop) or Ctrl-C then reaches
    # the process that stops the webserver and the daemon, instead of ending this one and orphaning them.
    os.chdir(repo_root())
    # `dagster dev` maps SIGTERM to its SIGINT handler. Started with SIGINT ignored (`lookups ui &` from a script,
    # a service manager, a CI job: an ignored signal stays ignored across exec), it would ignore SIGTERM too.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    os.execve(sys.executable, cmd, env)


def cmd_worker(args: argparse.Namespace) -> int:
    """Become a Celery worker of the project (`dagster-celery worker start` on the settings' broker and backend,
    the queues asked for): it takes the steps of runs launched with LOOKUPS_EXECUTOR=celery (docs/workers.md).
    An unreachable broker is one line, exit 2, before anything starts."""
    if args.concurrency < 1:
        raise LookupsError(f"--concurrency {args.concurrency} is not a number of steps at once: give 1 or more.")
    if args.broker:
        os.environ[CELERY_BROKER_ENV] = args.broker
    settings = celery_settings()
    check_celery(settings)
    env = _dagster_env()  # the instance and the data folder: the same (shared) ones as the runs'
    env.update({"LOOKUPS_EXECUTOR": "celery", CELERY_BROKER_ENV: settings["broker"]})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # dagster-celery starts `celery` from the PATH
    fd, config = tempfile.mkstemp(prefix="lookups-worker-", suffix=".yaml")  # this machine's temporary folder; JSON is YAML
    with os.fdopen(fd, "w") as fh:
        json.dump({"execution": {"config": settings}}, fh)
    queues = args.queue or [GPU_QUEUE, DEFAULT_QUEUE]
    cmd = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app", "-y", config, "-l", args.log_level]
    cmd += [arg for queue in queues for arg in ("-q", queue)]
    cmd += ["-n", args.name] if args.name else []
    cmd += ["--", f"--concurrency={args.concurrency}"]
    print(f"lookups worker: queues {', '.join(queues)} on {_redacted(settings['broker'])}, {args.concurrency} at a time "
          f"(DAGSTER_HOME={env['DAGSTER_HOME']})", flush=True)
    for signum in STOP_SIGNALS:  # as `lookups ui`: a service manager's SIGTERM reaches the worker
        signal.signal(signum, signal.SIG_DFL)
    os.execve(sys.executable, cmd, env)


def cmd_keys(args: argparse.Namespace) -> int:
    """List or remove model and corpus keys, through the instance (a subprocess: this package never imports Dagster)."""
    cmd = [sys.executable, "-m", "lookups.assets.keys", args.action]
    for kind in ("model", "corpus"):
        for key in getattr(args, kind):
            cmd += [f"--{kind}", key]
    return subprocess.call(cmd, env=_dagster_env())  # in the caller's folder: a relative path names the key it registered


def cmd_paths(args: argparse.Namespace) -> int:
    """Where things are; it creates nothing there but the data folder itself (so it also works on a read-only one)."""
    store = Store()
    print(json.dumps({"data": str(data_dir()), "database": str(database_path()), "warehouse": store.root, "dagster_home": str(dagster_home_dir())}, indent=2))
    return 0


def cmd_views_sql(args: argparse.Namespace) -> int:
    print(Store().views_sql())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every result file against what was written; say what the next run computes again. Exit 1 when a
    file is damaged (and ``--repair`` was not given)."""
    store = Store()
    if not store.exists():
        print(f"Nothing to verify at {store.path} yet.")
        return 0
    found = store.verify()
    print(f"{found.files} files ({found.bytes / 1e6:.1f} MB) checked against their recorded size and SHA-256 in {found.seconds:.2f} s: "
          f"{len(found.damaged) or 'none'} damaged.")
    for entry, problem in found.damaged:
        print(f"  {entry.table}: {problem}")
    if found.recomputed():
        print("The next `lookups run` of each partition computes again: " + ", ".join(found.recomputed()) + ".")
    if found.unowned():
        print(f"{len(found.unowned())} of them no step rewrites (a log, or a file written before checksums were recorded): "
              "`lookups verify --repair` drops them, and the version records that depend on them.")
    for partition, count in found.pending.items():
        print(f"Pending: {count} files of partition {partition}, from a run that did not complete (or one running now); "
              "its next run continues from them, and readers see them once a run of it succeeds.")
    if found.damaged and args.repair:
        dropped = store.drop_damaged()
        print(f"Dropped {len(dropped)} damaged files from the published results: the next `lookups run` computes what they held.")
        return 0
    return 1 if found.damaged else 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    """`lookups run`: the run config file, the flags over it (docs/configuration.md) and the terminal log level."""
    run = sub.add_parser("run", help="Materialize every asset through Dagster, then print a summary.")
    run.add_argument(
        "--model",
        help=f"Model: '{EMBEDDED_MODEL}' (default, offline), '{GEMMA3_MODEL}' (Gemma 3 270M base, offline), 'planted' (a 3-layer model "
        "with a known circuit, with --corpus planted: the whole graph in about a minute), a Hugging Face name or a local checkpoint folder.",
    )
    run.add_argument(
        "--corpus", help=f"Corpus: '{EMBEDDED_CORPUS}' (default), 'planted', a folder of .txt, a .jsonl/.parquet file or hf:<dataset>."
    )
    run.add_argument("--max-documents", type=int, help="Passages in the prompt set (default 240; 0 for all).")
    run.add_argument("--neurons-per-layer", type=int, help="Selected neurons per layer (default: the paper's 40 of 5120, scaled).")
    run.add_argument("--last-layers", type=int, help="Select in the last K layers (default: the paper's last 5 of 36, scaled to the depth).")
    run.add_argument(
        "--explainer",
        choices=["auto", "openai", "local", "contrastive"],
        help="Explanation backend (default auto: openai when LOOKUPS_LLM_BASE_URL is set, else the local SmolLM2; contrastive always runs too).",
    )
    run.add_argument("--max-llm-calls", type=int, help="Run budget: at most this many LLM calls (cached answers are free; default: no limit).")
    run.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Terminal log level (default INFO: step starts and ends, progress, failures).",
    )
    run.add_argument("--config", help="A YAML file of Dagster run config ({ops: {asset: {config: {...}}}}); flags override it.")
    run.set_defaults(func=cmd_run)


def _add_summary(sub: argparse._SubParsersAction) -> None:
    """`lookups summary`: which model and prompt set to summarize."""
    summary = sub.add_parser("summary", help="Print the summary of the latest (or a given) model and prompt set.")
    summary.add_argument("--model-id", help="A model_id from the store (default: the latest model).")
    summary.add_argument("--prompt-set-id", help="A prompt_set_id from the store (default: the latest prompt set).")
    summary.set_defaults(func=cmd_summary)


def _add_query(sub: argparse._SubParsersAction) -> None:
    """`lookups query`: a named query or SQL, its parameters, and where and how its rows are written."""
    query = sub.add_parser(
        "query",
        help="Run a named query (sql/queries/) or any SELECT on a read-only connection; `lookups query --list` lists them.",
        description="Run a named query from sql/queries/ (e.g. `lookups query consistent_pairs`) or any SELECT "
        "(e.g. `lookups query \"SELECT * FROM heads_by_layer\"`) on a read-only connection to the results. Writes, settings "
        "and files other than the results (unless --allow-files) are refused. "
        "Queries take $name parameters: $model_id and $prompt_set_id default to the latest run, $limit to 20.",
    )
    query.add_argument("query", nargs="?", help="A named query or SQL in quotes.")
    query.add_argument("--list", action="store_true", help="List the named queries and their parameters.")
    query.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="A $KEY parameter, e.g. --param token=' order' --param layer=27 (repeatable).",
    )
    query.add_argument("--model-id", help="$model_id (default: the latest model in the store).")
    query.add_argument("--prompt-set-id", help="$prompt_set_id (default: the latest prompt set).")
    query.add_argument("--limit", type=int, help="$limit (default 20).")
    query.add_argument(
        "--format", default="table", choices=["table", "csv", "json", "parquet"],
        help="Output: an aligned table (default), CSV, JSON records, or Parquet (needs --output).",
    )
    query.add_argument(
        "--output", help="Write to this file instead of the terminal (outside the data folder, the results and the Dagster instance)."
    )
    query.add_argument(
        "--pending", action="store_true",
        help="Read the results of runs that have not completed too (a failed or stopped run's finished steps, a run in progress), "
        "e.g. the rows a failed check names. Without it a query sees completed runs only.",
    )
    query.add_argument(
        "--allow-files", action="append", default=[], metavar="PATH",
        help="Let the SQL read this file, or the files under this folder, e.g. read_csv('PATH/labels.csv') to join with "
        "(repeatable; never the results folder). Without it a query reads the results and no other file.",
    )
    query.set_defaults(func=cmd_query)


def _add_ui(sub: argparse._SubParsersAction) -> None:
    """`lookups ui`: where the Dagster UI listens and the run config its launchpad starts from."""
    ui = sub.add_parser("ui", help="Start the Dagster UI (webserver and daemon) on the project's definitions.")
    ui.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1: this machine only).")
    ui.add_argument("--port", type=int, default=3000, help="Port (default 3000).")
    ui.add_argument("--config", help="A YAML file of run config the `lookups` job's launchpad starts from (same format as `run --config`).")
    ui.set_defaults(func=cmd_ui)


def _add_worker(sub: argparse._SubParsersAction) -> None:
    """`lookups worker`: a Celery worker for the steps of runs launched with LOOKUPS_EXECUTOR=celery."""
    worker = sub.add_parser(
        "worker",
        help="Start a Celery worker that runs steps of runs launched with LOOKUPS_EXECUTOR=celery (docs/workers.md).",
        description="A Celery worker (dagster-celery) on the broker of LOOKUPS_CELERY_BROKER (default redis://127.0.0.1:6379/0). "
        "Steps that load the model go to the queue 'gpu', the others to 'dagster'; a worker without --queue takes both. Every worker "
        "must see the same data folder (LOOKUPS_DATA_DIR) and Dagster instance as the process that launches the run.",
    )
    worker.add_argument(
        "--queue", action="append", choices=[GPU_QUEUE, DEFAULT_QUEUE], metavar="{gpu,dagster}",
        help="A queue to take steps from: 'gpu' (the steps that load the model) or 'dagster' (the others); repeatable (default: both).",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="Steps at once, each in its own process (default 1: one model in memory).")
    worker.add_argument("--broker", help="The broker's URL (default: $LOOKUPS_CELERY_BROKER, else redis://127.0.0.1:6379/0).")
    worker.add_argument("--name", help="The worker's name (default: dagster-<random>); shown with its host in the run's events.")
    worker.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Celery's log level (default INFO).")
    worker.set_defaults(func=cmd_worker)


def _add_keys(sub: argparse._SubParsersAction) -> None:
    """`lookups keys`: list the registered model and corpus keys, or remove some."""
    keys = sub.add_parser(
        "keys",
        help="List the registered model and corpus keys and whether each resolves; `lookups keys remove --model KEY` removes one.",
        description="Every model and corpus key a run or the UI registered is a partition key in the Dagster instance; one that no longer "
        "resolves (a deleted folder, a moved file) is observed, and warned about, on every run until removed. Removing a key keeps its results.",
    )
    keys.add_argument("action", nargs="?", default="list", choices=["list", "remove"], help="list (default) or remove the keys given.")
    keys.add_argument("--model", action="append", default=[], metavar="KEY", help="A model key to remove, as `lookups keys` shows it (repeatable).")
    keys.add_argument("--corpus", action="append", default=[], metavar="KEY", help="A corpus key to remove, as `lookups keys` shows it (repeatable).")
    keys.set_defaults(func=cmd_keys)


def _add_locations(sub: argparse._SubParsersAction) -> None:
    """`lookups paths` and `lookups views-sql`: where the results are, and the SQL that reads them from any DuckDB."""
    paths = sub.add_parser("paths", help="Print where the data folder, database and Dagster instance are.")
    paths.set_defaults(func=cmd_paths)
    views = sub.add_parser(
        "views-sql",
        help="Print the SQL that makes any DuckDB (a MotherDuck database, a notebook) read the results: a view per table over its Parquet files, "
        "then the views of sql/views.sql.",
    )
    views.set_defaults(func=cmd_views_sql)
    verify = sub.add_parser(
        "verify",
        help="Check every result file against its recorded size and SHA-256, and say what the next run computes again.",
        description="Every result file's size, row count and SHA-256 are recorded when it is written. `lookups verify` checks them all, "
        "lists each missing, truncated or altered file, and says which steps the next `lookups run` computes again (a run checks a "
        "step's files itself before it skips the step). Exit 1 when a file is damaged.",
    )
    verify.add_argument(
        "--repair", action="store_true",
        help="Drop the damaged files from the published results (and the version records of the steps that wrote them), "
        "so that reads work again and the next run computes them.",
    )
    verify.set_defaults(func=cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    """The `lookups` command line: the program's help, then one subcommand group per ``_add_*``."""
    parser = argparse.ArgumentParser(
        prog="lookups",
        description="Find the attention heads that look up context and switch on next-token neurons. "
        "Results go to Parquet files with DuckDB views over them, under $LOOKUPS_DATA_DIR (default: data/ in the repository).",
        epilog="examples:\n"
        "  lookups run                                   # the main job on the embedded defaults, then a summary\n"
        "  lookups run --model planted --corpus planted  # the sanity run: a planted circuit, found in about a minute\n"
        "  lookups run --model gemma-3-270m              # a second offline model: Gemma 3 270M base\n"
        "  lookups run --model gpt2-large --corpus hf:NeelNanda/pile-10k   # the paper's setting (needs the hub)\n"
        "  LOOKUPS_LLM_BASE_URL=http://127.0.0.1:8000/v1 lookups run --explainer openai   # explanations from an endpoint\n"
        "  lookups query --list                          # named queries\n"
        "  lookups query consistent_pairs --limit 10     # which heads switch on which neurons\n"
        "  lookups ui --config my_run.yaml               # the Dagster UI, launchpad prefilled\n"
        "  lookups keys                                  # registered model and corpus keys; `keys remove` drops stale ones\n"
        "  lookups worker --queue gpu                    # a Celery worker for the model's steps (LOOKUPS_EXECUTOR=celery)\n"
        "See `lookups <command> --help` for each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_summary, _add_query, _add_ui, _add_worker, _add_keys, _add_locations):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Stopped as stop:
        print(f"lookups: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("lookups: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except LookupsError as err:
        print(f"lookups: {full_disk_message(err) if looks_full(err) else err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not looks_full(err):
            raise  # a bug: its traceback
        print(f"lookups: {full_disk_message(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
