"""``optuna-merge3`` end to end on the tiny world (in process): run, best, export, report, estimate.

``run`` itself is the session fixture ``tiny_run`` (4 complete trials in a tmp folder); the other
commands read that study. None of them creates or changes a trial.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from plugin_helpers import (
    TINY_RUN_TRIALS,
    TinyStudy,
    copy_estimate_cache,
    run_cli,
    tiny_raw,
    write_config,
)


def _table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and not cells[0].startswith("---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_run_prints_each_step_and_the_front(tiny_run: TinyStudy) -> None:
    out = tiny_run.output
    for step in ("[study] created 'tiny'", "[load] base + 2 endpoints",
                 "[estimate] math_it: fitting 2PL IRT on 68 reference models x 200 items",
                 "[estimate] qa_en: d=2, endpoints math_en=54.2%, lang_it=0.0%, subset of 20 items",
                 "[evolve] 0/4 complete trials; running 4 more",
                 "[evolve] 4 trials completed in ", "Pareto front", "Report: "):
        assert step in out, step
    assert out.index("[estimate]") < out.index("[study]")  # Estimate before the study is made
    study = optuna.load_study(study_name="tiny", storage=tiny_run.storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == TINY_RUN_TRIALS
    assert [t.user_attrs.get("seed") for t in complete[:3]] == [
        "endpoint:math_en", "endpoint:lang_it", "uniform"]
    assert [t.user_attrs["role"] for t in complete] == ["endpoint", "endpoint", "uniform"] + [
        "search"] * (TINY_RUN_TRIALS - 3)
    assert study.metric_names == ["math_it (gmpirt)", "qa_en (gmpirt)"]
    rows = _table_rows(out)
    front_rows = {k.split(" (")[0] for k in rows if k.startswith("trial ")}
    assert {f"trial {t.number}" for t in study.best_trials} == front_rows
    assert (tiny_run.out_dir / "report.png").stat().st_size > 20_000


def test_best_lists_the_front_with_endpoints_and_full_accuracy(tiny_run: TinyStudy) -> None:
    before = optuna.load_study(study_name="tiny", storage=tiny_run.storage).trials
    code, out, err = run_cli("best", tiny_run.config_path)
    assert code == 0, err
    rows = _table_rows(out)
    assert rows["model"] == ["math_it est. %", "qa_en est. %", "math_it full %", "qa_en full %"]
    study = optuna.load_study(study_name="tiny", storage=tiny_run.storage)
    front = sorted(t.number for t in study.best_trials)
    seeds = {0: "endpoint math_en", 1: "endpoint lang_it", 2: "uniform merge"}
    labels = [k for k in rows if k.startswith(("trial", "endpoint", "uniform"))]
    assert labels == [f"trial {n}" + (f" ({seeds[n]})" if n in seeds else "") for n in front] + [
        "endpoint math_en (trial 0)", "endpoint lang_it (trial 1)", "uniform merge (trial 2)"]
    for label in labels:  # estimates as stored (the seeds' too), full accuracy filled in
        number = int(re.search(r"trial (\d+)", label).group(1))
        est, full = rows[label][:2], rows[label][2:]
        assert est == [f"{100 * v:.1f}" for v in study.trials[number].values]
        assert all(re.fullmatch(r"\d+\.\d", cell) for cell in full)
    assert rows["endpoint math_en (trial 0)"][2:] == ["0.0", "54.2"]  # the shipped world's
    assert rows["endpoint lang_it (trial 1)"][2:] == ["14.0", "0.0"]
    assert [(t.number, t.state, t.values) for t in study.trials] == [
        (t.number, t.state, t.values) for t in before]


def test_export_writes_a_loadable_checkpoint_and_mergekit_yaml(
    tiny_run: TinyStudy, tmp_path: Path
) -> None:
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    code, stdout, err = run_cli("export", tiny_run.config_path, "2", "--out", out)
    assert code == 0, err
    assert f"exported trial 2 to {out}" in stdout
    assert {"config.json", "model.safetensors", "mergekit.yaml", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    recipe = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert recipe["merge_method"] == "task_arithmetic"
    assert Path(recipe["base_model"]).name == "base"
    weights = {Path(m["model"]).name: m["parameters"]["weight"] for m in recipe["models"]}
    assert weights == {"math_en": 0.5, "lang_it": 0.5}  # trial 2 is the uniform seed

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    world = Path(tiny_run.raw["merge"]["base"]).parent
    base, math_en, lang_it = (
        AutoModelForCausalLM.from_pretrained(world / n).state_dict()
        for n in ("base", "math_en", "lang_it"))
    for name, tensor in model.state_dict().items():  # base + mean of the two task vectors
        expected = base[name] + 0.5 * (math_en[name] - base[name]) + 0.5 * (lang_it[name] - base[name])
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
    ids = tokenizer("Q: mia ha 4 libri e ne riceve 3 . quanti libri ha mia ? A:",
                    return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == len(tokenizer) and torch.isfinite(logits).all()


def test_report_writes_a_png_and_a_markdown_summary(tiny_run: TinyStudy, tmp_path: Path) -> None:
    import matplotlib.image

    code, out, err = run_cli("report", tiny_run.config_path, "--out", tmp_path)
    assert code == 0, err
    png, md = tmp_path / "report.png", tmp_path / "report.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 400 and image.shape[1] >= 1000
    assert np.asarray(image).std() > 0.05  # not a blank canvas
    text = md.read_text()
    assert text.startswith("# Study tiny\n")
    assert f"{TINY_RUN_TRIALS} complete trials, {40 * TINY_RUN_TRIALS} items evaluated" in text
    rows = _table_rows(text)
    assert {"endpoint math_en (trial 0)", "endpoint lang_it (trial 1)",
            "uniform merge (trial 2)"} <= set(rows)
    assert any(label.startswith("trial ") for label in rows)
    assert "![report](report.png)" in text


def test_estimate_creates_the_study_once_for_the_workers(tiny_run: TinyStudy,
                                                         tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    config = write_config(tmp_path / "w.toml", tiny_raw(out_dir, name="workers"))
    code, out, err = run_cli("estimate", config)
    assert code == 0, err
    assert '"subset_item_ids"' in out and "[study] created 'workers'" in out
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{out_dir}/study.db")
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 3  # the generation-0 seeds
    code, out, err = run_cli("estimate", config)  # again: resumed, nothing enqueued twice
    assert code == 0 and "[study] resumed 'workers'" in out
    assert len(optuna.load_study(study_name="workers",
                                 storage=f"sqlite:///{out_dir}/study.db").trials) == 3


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from optuna_merge3.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for command in ("run", "estimate", "best", "export", "report", "dashboard"):
        assert re.search(rf"^\s+{command}\s", help_text, re.M), command


def test_cached_irt_fit_keeps_the_fingerprint_of_its_responses(tiny_run: TinyStudy) -> None:
    """The Estimate cache adds its own key; ``fit_irt``'s digest of the training responses stays."""
    from optuna_merge3 import irt
    from optuna_merge3.config import load_config
    from optuna_merge3.evaluation import load_task
    from optuna_merge3.pipeline import load_reference_responses

    task_config = load_config(tiny_run.config_path).tasks[0]
    (path,) = (tiny_run.out_dir / "estimate").glob(f"irt_{task_config.name}_*.npz")
    params = irt.IRTParams.load(path)
    _, item_ids, responses = load_reference_responses(task_config.reference)
    order = [item_ids.index(item.id) for item in load_task(task_config.path).items]
    assert params.meta["fingerprint"] == irt.responses_fingerprint(responses[:, order])
    assert params.meta["cache_key"] in path.name


def test_a_dare_ties_study_with_counter_masks_runs_end_to_end(
    tiny_run: TinyStudy, tmp_path: Path
) -> None:
    """``[evaluation] rng = "counter"`` (the default) through the real CLI: every trial
    completes, and a trial's exported weights are the streamed merge with the same counter
    masks (MergeKit's draws would differ)."""
    import torch
    from safetensors.torch import load_file

    from optuna_merge3.config import load_config
    from optuna_merge3.merging import InMemoryMerger, MergeSpace

    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    raw = tiny_raw(out_dir, n_trials=3, name="dare")
    raw["merge"].update(method="dare_ties", search={"weight": [0.0, 1.5], "density": [0.3, 0.9]})
    raw["evaluation"].update(rng="counter")
    config = write_config(tmp_path / "dare.toml", raw)
    code, out, err = run_cli("run", config)
    assert code == 0, err[-3000:]
    study = optuna.load_study(study_name="dare", storage=f"sqlite:///{out_dir}/study.db")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    code, out, err = run_cli("export", config, str(complete[-1].number),
                             "--out", tmp_path / "exported")
    assert code == 0, err[-3000:]
    yaml_text = (tmp_path / "exported" / "mergekit.yaml").read_text()
    seed = int(re.search(r"seed=(\d+)", yaml_text).group(1))
    merge = load_config(config).merge
    space = MergeSpace.from_config(merge)
    streamed = InMemoryMerger(merge.base, merge.endpoints, space, stream=True)
    expected = streamed.merged_state_dict(complete[-1].params, seed=seed)
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
