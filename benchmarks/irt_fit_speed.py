"""Fitting speed of the 2PL: ``optuna_merge3.irt.fit_irt`` (scipy MAP) vs py-irt (pyro SVI).

Data: ARC of the Open LLM Leaderboard (arc_v1 + arc_v2 joined on the model name: 245 items, every
model that answered both, ~3850 models; ../shared/data/leaderboard). A seeded 10% of the cells is
held out (set to NaN); both methods fit the same remaining cells and predict the held-out ones
from their own fitted item parameters and abilities: log-loss, Brier score and accuracy (p > 0.5).

py-irt is run as tinyBenchmarks runs it: ``multidim_2pl`` (hierarchical priors), Adam lr 0.1,
decay 0.9999, its default 2000 epochs, CPU, through ``IrtModelTrainer``; its prediction is
sigmoid(sum_k disc_k (theta_k - b_k)) with the exported posterior means (disc = exp(loc_disc)).
If its SVI fails part-way (on this data it turns a variational parameter into NaN and pyro
raises), the failing epoch is reported, py-irt's best-loss parameters before the failure are
evaluated, and the speed-up uses its per-epoch time x the configured epochs.

py-irt is a benchmark-only dependency (not in pyproject.toml). Install it into the venv with

    pip install --no-deps py-irt==0.7.1 pyro-ppl==1.9.2 pyro-api==0.1.2 opt_einsum ordered-set toml

(--no-deps: its pins, pandas < 3, rich < 14, typer < 0.15, would downgrade packages of this
environment, and plain ``pip install py-irt`` may pull another torch; it runs with the installed
versions). Without py-irt the script times our fit alone and says why py-irt was skipped.

Usage: python benchmarks/irt_fit_speed.py [--n-dims D] [--epochs 2000] [--lr 0.1] [--quick]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _leaderboard import data_available, load_benchmark  # noqa: E402

from optuna_merge3.irt import fit_irt  # noqa: E402


def held_out_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Log-loss, Brier score and accuracy of probabilities ``p`` for 0/1 outcomes ``y``."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "brier": float(np.mean((p - y) ** 2)),
        "accuracy": float(np.mean((p > 0.5) == (y == 1))),
    }


def fit_ours(train: np.ndarray, d: int, seed: int) -> tuple[float, float, np.ndarray, dict]:
    """Fit with optuna_merge3.irt; returns (wall s, CPU s, probability matrix, meta)."""
    kw = {}
    if "calibrate_gp" in inspect.signature(fit_irt).parameters:
        kw["calibrate_gp"] = False  # time the 2PL fit alone; the gp-IRT calibration is extra
    t0, c0 = time.perf_counter(), time.process_time()
    params, gamma = fit_irt(train, n_dims=d, random_state=seed, **kw)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    return sec, cpu, expit(gamma @ params.alpha.T - params.beta), params.meta


def fit_pyirt(train: np.ndarray, d: int, epochs: int, seed: int, lr: float = 0.1) -> dict:
    """Fit py-irt's multidim_2pl on the observed cells through its ``IrtModelTrainer``.

    Returns a dict: ``seconds`` / ``cpu_seconds`` (until the end or the failure), ``prob``
    (probability matrix), ``epochs_done``, ``best_epoch`` (lowest ELBO loss) and ``error``
    (None, or why training stopped). If SVI fails part-way (py-irt raises, e.g. on NaN
    parameters), the parameters of the best epoch before the failure (py-irt keeps them in
    ``trainer.best_params``) are evaluated instead of the last ones.
    """
    import py_irt.training as pyirt_training
    import pyro
    import torch
    from ordered_set import OrderedSet
    from py_irt.config import IrtConfig
    from py_irt.dataset import Dataset

    losses: list[float] = []

    class CountingSVI(pyirt_training.SVI):  # records each epoch's loss; same computation
        def step(self, *a, **k):
            loss = super().step(*a, **k)
            losses.append(float(loss))
            return loss

    n_models, n_items = train.shape
    subj, item = np.nonzero(~np.isnan(train))
    ids_m = [str(k) for k in range(n_models)]
    ids_i = [str(k) for k in range(n_items)]
    data = Dataset(
        item_ids=OrderedSet(ids_i), subject_ids=OrderedSet(ids_m),
        item_id_to_ix={s: k for k, s in enumerate(ids_i)}, ix_to_item_id=dict(enumerate(ids_i)),
        subject_id_to_ix={s: k for k, s in enumerate(ids_m)},
        ix_to_subject_id=dict(enumerate(ids_m)),
        observation_subjects=subj.tolist(), observation_items=item.tolist(),
        observations=train[subj, item].tolist(), training_example=[True] * len(subj),
    )
    config = IrtConfig(model_type="multidim_2pl", epochs=epochs, dims=d, lr=lr,
                       lr_decay=0.9999, priors="hierarchical", seed=seed, deterministic=True,
                       log_every=max(epochs, 1))
    pyro.set_rng_seed(seed)
    torch.manual_seed(seed)
    error = None
    orig_svi = pyirt_training.SVI
    pyirt_training.SVI = CountingSVI
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer = pyirt_training.IrtModelTrainer(data_path=None, config=config, dataset=data,
                                                 verbose=False)
        try:
            trainer.train(device="cpu")
            out = trainer.last_params
        except (ValueError, RuntimeError) as exc:  # e.g. NaN variational parameters
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            out = trainer.best_params
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        pyirt_training.SVI = orig_svi
    result = {"seconds": sec, "cpu_seconds": cpu, "epochs_done": len(losses), "error": error,
              "best_epoch": int(np.nanargmin(losses)) + 1 if losses else 0, "prob": None}
    if out is not None:
        theta = np.asarray(out["ability"])  # (n_models, d)
        diff = np.asarray(out["diff"])  # (n_items, d)
        disc = np.asarray(out["disc"])  # (n_items, d), already exp(loc_disc)
        result["prob"] = expit(theta @ disc.T - np.sum(disc * diff, axis=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-dims", type=int, default=None, help="d (default: package default)")
    parser.add_argument("--epochs", type=int, default=2000, help="py-irt epochs (its default)")
    parser.add_argument("--holdout", type=float, default=0.1, help="share of held-out cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of our fit (best kept)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1,
                        help="py-irt Adam learning rate (0.1: its default, as tinyBenchmarks)")
    parser.add_argument("--quick", action="store_true", help="py-irt 200 epochs, 1 repeat")
    parser.add_argument("--skip-pyirt", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 200, 1
    if not data_available():
        raise SystemExit("shared leaderboard data not found (../shared/data/leaderboard)")
    if args.n_dims is None:
        args.n_dims = int(inspect.signature(fit_irt).parameters["n_dims"].default)
        d_src = "package default of fit_irt"
    else:
        d_src = "--n-dims"

    bench = load_benchmark("arc")
    resp = bench.responses[bench.complete]
    rng = np.random.default_rng(args.seed)
    held = rng.random(resp.shape) < args.holdout
    train = np.where(held, np.nan, resp)
    y_held = resp[held]
    base_p = np.broadcast_to(np.nanmean(train, axis=0), resp.shape)[held]

    rows = []
    times, cpus = [], []
    for _ in range(args.repeats):
        sec, cpu, prob, meta = fit_ours(train, args.n_dims, args.seed)
        times.append(sec)
        cpus.append(cpu)
    rows.append({"method": "optuna_merge3 fit_irt (scipy L-BFGS-B MAP, 1 BLAS thread)",
                 "seconds": min(times), "cpu_seconds": min(cpus),
                 **held_out_metrics(prob[held], y_held),
                 "detail": f"{meta.get('iterations')} iterations, converged "
                           f"{meta.get('converged')}; {len(times)} run(s): "
                           + ", ".join(f"{t:.1f}" for t in times) + " s"})
    pyirt_error = None
    if not args.skip_pyirt:
        try:
            import py_irt  # noqa: F401
        except ImportError as exc:
            pyirt_error = (f"py-irt is not installed ({exc}); install it as the module docstring "
                           "says (pip install --no-deps py-irt pyro-ppl ...)")
    py = None
    if not args.skip_pyirt and pyirt_error is None:
        try:
            import torch

            torch.set_num_threads(args.torch_threads)
            py = fit_pyirt(train, args.n_dims, args.epochs, args.seed, lr=args.lr)
        except Exception as exc:  # report exactly why py-irt could not run
            pyirt_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if py is not None:
        per_epoch = py["seconds"] / max(py["epochs_done"], 1)
        py["full_seconds"] = per_epoch * args.epochs  # = seconds when all epochs ran
        py["full_cpu_seconds"] = py["cpu_seconds"] / max(py["epochs_done"], 1) * args.epochs
        note = f"{per_epoch * 1000:.0f} ms per epoch"
        if py["error"]:
            note = (f"FAILED in epoch {py['epochs_done'] + 1} of {args.epochs} ({py['error']}); "
                    f"held-out error of its best-loss epoch {py['best_epoch']}; time measured "
                    f"until the failure; {note}")
        if py["prob"] is None:
            pyirt_error = f"py-irt failed before exporting any parameters: {py['error']}"
        else:
            rows.append({"method": f"py-irt multidim_2pl (pyro SVI, {args.epochs} epochs, lr "
                                   f"{args.lr}, {args.torch_threads} torch threads)",
                         "seconds": py["seconds"], "cpu_seconds": py["cpu_seconds"],
                         **held_out_metrics(py["prob"][held], y_held), "detail": note})
    rows.append({"method": "baseline: training item mean (no model)", "seconds": 0.0,
                 "cpu_seconds": 0.0,
                 **held_out_metrics(base_p, y_held), "detail": ""})

    print("# irt_fit_speed: 2PL fit on ARC (arc_v1 + arc_v2), held-out cells")
    versions = f"numpy {np.__version__}"
    try:
        import py_irt
        import pyro
        import torch

        versions += (f", torch {torch.__version__}, pyro {pyro.__version__}, "
                     f"py-irt {getattr(py_irt, '__version__', '0.7.1')}")
    except ImportError as exc:
        versions += f", py-irt not importable ({exc})"
    print(f"{resp.shape[0]} models x {resp.shape[1]} items, {int(held.sum())} held-out cells "
          f"({args.holdout:.0%}, seed {args.seed}); d = {args.n_dims} ({d_src}); {versions}; "
          f"{platform.machine()}, 2-core machine shared with other jobs\n")
    print("| method | fit wall s | fit CPU s | held-out log-loss | Brier | accuracy | notes |")
    print("|:---|---:|---:|---:|---:|---:|:---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
              f"{r['log_loss']:.4f} | {r['brier']:.4f} | {r['accuracy']:.4f} | {r['detail']} |")
    summary = {"benchmark": "irt_fit_speed", "d": args.n_dims, "n_models": int(resp.shape[0]),
               "n_items": int(resp.shape[1]), "held_out_cells": int(held.sum()),
               "ours": {k: round(v, 4) for k, v in rows[0].items()
                        if k in ("seconds", "cpu_seconds", "log_loss", "brier", "accuracy")}}
    if pyirt_error:
        print(f"\npy-irt could not run: {pyirt_error}")
        summary["pyirt_error"] = pyirt_error
    elif not args.skip_pyirt:
        pyr = rows[1]
        # Time py-irt needs for its configured epochs (measured, or per-epoch x epochs when it
        # failed part-way) against our best of --repeats.
        speedup = py["full_seconds"] / rows[0]["seconds"]
        cpu_speedup = py["full_cpu_seconds"] / max(rows[0]["cpu_seconds"], 1e-9)
        better = rows[0]["log_loss"] <= pyr["log_loss"] and rows[0]["brier"] <= pyr["brier"]
        goal = speedup >= 10 and better
        if py["error"]:
            print(f"\npy-irt FAILED in epoch {py['epochs_done'] + 1} of {args.epochs} "
                  f"({py['seconds']:.0f} s): {py['error']}. Its row uses the parameters of its "
                  f"best-loss epoch ({py['best_epoch']}) before the failure; the speed-up below "
                  f"uses its per-epoch time x {args.epochs} epochs "
                  f"({py['full_seconds']:.0f} s wall, {py['full_cpu_seconds']:.0f} s CPU).")
        print(f"\nSpeed-up {speedup:.1f}x wall, {cpu_speedup:.1f}x CPU time; held-out "
              f"log-loss {rows[0]['log_loss']:.4f} (ours) vs {pyr['log_loss']:.4f} (py-irt), "
              f"Brier {rows[0]['brier']:.4f} vs {pyr['brier']:.4f}. Goal (>= 10x faster at equal "
              f"or better held-out error): {'met' if goal else 'NOT met'}"
              + (" (py-irt did not complete its epochs)." if py["error"] else "."))
        summary["pyirt"] = {k: round(v, 4) for k, v in pyr.items()
                            if k in ("seconds", "cpu_seconds", "log_loss", "brier", "accuracy")}
        summary["pyirt_epochs"] = args.epochs
        summary["pyirt_lr"] = args.lr
        summary["pyirt_epochs_done"] = py["epochs_done"]
        summary["pyirt_failure"] = py["error"]
        summary["speedup"] = round(speedup, 2)
        summary["cpu_speedup"] = round(cpu_speedup, 2)
        summary["goal_met"] = bool(goal)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
