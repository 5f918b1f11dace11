"""``optuna-merge3`` command line: run | estimate | best | export | report | dashboard |
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
    print(message, flush=True)


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
    from optuna_merge3.report import write_report

    runner = _runner(args)
    study = runner.run(n_trials=args.n_trials, show_progress=True)
    rows = _print_results(runner)
    png, md = write_report(study, rows, [t.name for t in runner.config.tasks],
                           runner.config.out_dir)
    _say(f"\nReport: {png} and {md}")
    again = runner.cli_args()  # with --storage when it was given: the same study, not a new one
    _say(f"Inspect: optuna-merge3 dashboard {again}   "
         f"(or: optuna-dashboard {runner.storage} --artifact-dir "
         f"{runner.config.out_dir / 'artifacts'})")
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


def dashboard_server(runner: Any, host: str = "127.0.0.1", port: int = 8080) -> Any:
    """optuna-dashboard's WSGI app on the study and its artifact store, bound to ``host:port``
    (port 0: a free one, see ``server.server_port``); call ``serve_forever()`` on it.

    The same app and threaded wsgiref server as ``optuna-dashboard STORAGE --artifact-dir``.
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="optuna-merge3",
        description="Evolutionary model merging with MERGE^3 fitness estimation, on Optuna.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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
                     help="heartbeat seconds of an RDB storage (default 30, 0: off): the trial "
                          "of a killed worker is failed and retried")
    add("estimate", cmd_estimate, "Only Extract and Estimate (IRT fit, endpoint abilities).")
    best = add("best", cmd_best, "Print the Pareto front / best trial next to the endpoints.")
    best.add_argument("--no-truth", action="store_true",
                      help="skip evaluating the front on all items")
    export = add("export", cmd_export, "save_pretrained a trial's merge + its MergeKit YAML.")
    export.add_argument("trial", type=int, help="trial number")
    export.add_argument("--out", required=True, help="output folder")
    report = add("report", cmd_report, "Write report.png and report.md.")
    report.add_argument("--out", help="output folder (default: the study's out_dir)")
    dash = add("dashboard", cmd_dashboard, "Serve optuna-dashboard on the study + artifacts.")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080, help="0: any free port")
    from optuna_merge3.reference._cli import add_reference_commands

    add_reference_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optuna-merge3`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna_merge3.config import ConfigError
    from optuna_merge3.study import SignatureMismatchError

    try:
        return args.func(args)
    except (ConfigError, SignatureMismatchError, ValueError, OSError) as exc:
        print(f"optuna-merge3 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
