"""``optuna-merge3`` command line: run | estimate | best | export | report | dashboard | plan |
reference (import | build).

The CLI is the only place that prints; the library logs. Every command takes the study's TOML
config, so a resumed study, a second worker or a later ``export`` needs nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _say(message: str) -> None:
    from optuna_merge3.redaction import redact

    print(redact(message), flush=True)


class _RedactingFormatter(logging.Formatter):
    """Log lines (and their tracebacks) with every storage password masked."""

    def format(self, record: logging.LogRecord) -> str:
        from optuna_merge3.redaction import redact

        return redact(super().format(record))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is: Optuna fails the running trial as for Ctrl-C."""


def _on_signal(signum: int, frame: Any) -> None:
    import signal

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "Trial N failed" traceback
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _runner(args: argparse.Namespace) -> Any:
    from optuna_merge3.runner import DEFAULT_HEARTBEAT_S, StudyRunner

    heartbeat = getattr(args, "heartbeat", None)
    return StudyRunner(args.config, storage=args.storage, progress=_say,
                       heartbeat_interval=DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat)


def _print_results(runner: Any, truth: bool = True) -> list[Any]:
    from optuna_merge3.report import results_table

    rows = runner.summary(with_truth=truth)
    _say("")
    _say("Pareto front, then the endpoints and the uniform merge (est. % = the MERGE^3 estimate "
         "the search saw; full % = accuracy on all items):"
         if len(runner.config.tasks) > 1 else "Best trial, endpoints and the uniform merge:")
    _say(results_table(rows, [t.name for t in runner.config.tasks]))
    return rows


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    from optuna_merge3.redaction import redact
    from optuna_merge3.report import write_report

    runner = _runner(args)
    import threading

    ours = threading.current_thread() is threading.main_thread()  # handlers: main thread only
    previous = {sig: signal.signal(sig, _on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT) if ours}
    try:
        study = runner.run(n_trials=args.n_trials, show_progress=True)
    except KeyboardInterrupt as exc:
        for sig in previous:  # a second signal while we clean up
            signal.signal(sig, signal.SIG_IGN)
        requeued = runner.requeue_interrupted()
        what = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
        trials = (f"trial(s) {requeued} failed and re-queued for the next run"
                  if requeued else "no trial was running")
        print(f"optuna-merge3 run: stopped by {what}; {trials}", file=sys.stderr, flush=True)
        return 0 if isinstance(exc, _Terminated) else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    rows = _print_results(runner)
    png, md = write_report(study, rows, [t.name for t in runner.config.tasks],
                           runner.config.out_dir)
    _say(f"\nReport: {png} and {md}")
    again = runner.cli_args()  # with --storage when it was given: the same study, not a new one
    storage = runner.storage
    hidden = " (password hidden)" if redact(storage) != storage else ""
    _say(f"Inspect: optuna-merge3 dashboard {again}   (or, without the per-trial answers "
         f"stored in the study: optuna-dashboard {storage}{hidden})")
    _say(f"Export a merge: optuna-merge3 export {again} TRIAL --out merged/")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import json

    runner = _runner(args)
    runner.check()
    setup = runner.setup
    _say(json.dumps(setup.summary(), indent=1))
    _say(f"[estimate] done in {setup.seconds:.1f} s (cached under {runner.config.out_dir})")
    runner.open_study()  # created once here, before several workers start `run`
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    _print_results(_runner(args), truth=not args.no_truth)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = _runner(args).export(args.trial, args.out)
    _say(f"exported trial {args.trial} to {out} (save_pretrained + tokenizer + mergekit.yaml)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from optuna_merge3.report import write_report

    runner = _runner(args)
    rows = _print_results(runner)
    png, md = write_report(runner.open_study(create=False), rows,
                           [t.name for t in runner.config.tasks],
                           args.out or runner.config.out_dir)
    _say(f"Report: {png} and {md}")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from optuna_merge3 import workers

    runner = _runner(args)
    study = runner.open_study(create=False)
    running = workers.stale_trials(study, all_running=True)
    dead = {t.number for t in workers.stale_trials(study)}
    if not running:
        _say(f"study {runner.config.name!r}: no RUNNING trial; nothing to repair")
        return 0
    for trial in running:
        known = "dead (recognised)" if trial.number in dead else "no worker seen alive here"
        _say(f"trial {trial.number}: RUNNING, {workers.describe_worker(trial)}; {known}")
    if not args.yes:
        if not sys.stdin.isatty():
            _say(f"Make sure no worker runs this study, then: optuna-merge3 repair {args.config}"
                 " --yes (fails these trials and re-queues their genotypes)")
            return 1
        answer = input(f"Fail and re-queue these {len(running)} trial(s)? No worker may be "
                       "running them. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _say("nothing changed")
            return 1
    failed = workers.fail_and_requeue(study, running)
    _say(f"failed and re-queued {failed} trial(s); `optuna-merge3 run {args.config}` finishes "
         "the study")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from optuna_merge3.config import load_config
    from optuna_merge3.runner import StudyRunner

    runner = StudyRunner(load_config(args.config), storage=args.storage, progress=_say)
    plan = runner.memory_plan
    _say(plan.table())
    plan.check(str(args.config))  # ConfigError: exit 2 with the numbers and a mode that fits
    return 0


def dashboard_server(runner: Any, host: str = "127.0.0.1", port: int = 8080) -> Any:
    """optuna-dashboard's WSGI app on the study and its artifact store, bound to ``host:port``
    (port 0: a free one, see ``server.server_port``); call ``serve_forever()`` on it.

    The same app and threaded wsgiref server as ``optuna-dashboard``, with the artifact store
    inside the study storage (:class:`~optuna_merge3.shared_state.StudyArtifactStore`).
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            logging.getLogger("optuna_merge3.dashboard").debug(format, *args)

    runner.open_study(create=False)  # refuses a changed config before serving a stale view
    app = wsgi(runner.open_storage(), artifact_store=runner.artifact_store)
    return make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)


def cmd_dashboard(args: argparse.Namespace) -> int:
    server = dashboard_server(_runner(args), args.host, args.port)
    _say(f"optuna-dashboard on http://{args.host}:{server.server_port} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optuna-merge3")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="optuna-merge3",
        description="Evolutionary model merging with MERGE^3 fitness estimation, on Optuna.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("config", help="study TOML file (e.g. studies/tiny_world.toml)")
        p.add_argument("--storage", help="override the storage URL / journal file of the config")
        p.set_defaults(func=func)
        return p

    run = add("run", cmd_run, "Extract, Estimate (cached) and Evolve; resumes a study.")
    run.add_argument("--n-trials", type=int, help="global budget of complete trials")
    run.add_argument("--heartbeat", type=int, default=None,
                     help="heartbeat seconds (default 30): the trial of a killed worker is "
                          "failed and retried. 0 (off) only on SQLite or a journal file, where "
                          "a dead worker is recognised by its pid")
    add("estimate", cmd_estimate, "Only Extract and Estimate (IRT fit, endpoint abilities).")
    best = add("best", cmd_best, "Print the Pareto front / best trial next to the endpoints.")
    best.add_argument("--no-truth", action="store_true",
                      help="skip evaluating the front on all items")
    export = add("export", cmd_export, "save_pretrained a trial's merge + its MergeKit YAML.")
    export.add_argument("trial", type=int, help="trial number")
    export.add_argument("--out", required=True, help="output folder")
    report = add("report", cmd_report, "Write report.png and report.md.")
    report.add_argument("--out", help="output folder (default: the study's out_dir)")
    repair = add("repair", cmd_repair,
                 "Fail and re-queue RUNNING trials left by killed workers (asks first).")
    repair.add_argument("--yes", action="store_true", help="do not ask; no worker may be running")
    add("plan", cmd_plan, "Print the memory plan (safetensors headers only) and refuse a "
        "config that cannot fit.")
    dash = add("dashboard", cmd_dashboard, "Serve optuna-dashboard on the study + artifacts.")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080, help="0: any free port")
    from optuna_merge3.reference._cli import add_reference_commands

    add_reference_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optuna-merge3`` command."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        handlers=[handler], force=True)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.logging.disable_default_handler()  # Optuna logs through the redacting handler
        optuna.logging.enable_propagation()
        from optuna_merge3.config import ConfigError
        from optuna_merge3.redaction import redact
        from optuna_merge3.study import SignatureMismatchError

        try:
            return args.func(args)
        except (ConfigError, SignatureMismatchError, ValueError, OSError, RuntimeError) as exc:
            print(f"optuna-merge3 {args.command}: error: {redact(str(exc))}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:  # Ctrl-C outside a study run (loading, Estimate, a report)
        print(f"optuna-merge3 {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
