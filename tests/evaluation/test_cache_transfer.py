"""Correctness cache, fingerprints, negative transfer rate and evaluate end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optuna_merge3.evaluation import (
    CorrectnessCache,
    GenerationConfig,
    Task,
    TaskItem,
    evaluate,
    generate,
    model_fingerprint,
    negative_transfer_rate,
    task_fingerprint,
)


def test_negative_transfer_rate() -> None:
    ends = np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0]], dtype=bool)
    merged = np.array([1, 0, 0, 1, 0], dtype=bool)
    # solved by some endpoint: items 0, 1, 2; merge loses 1 and 2 -> 2/3
    assert negative_transfer_rate(ends, merged) == pytest.approx(2 / 3)
    assert negative_transfer_rate(ends[0], np.ones(5, bool)) == 0.0
    assert negative_transfer_rate(np.zeros((2, 5), bool), merged) == 0.0
    with pytest.raises(ValueError, match="shape"):
        negative_transfer_rate(ends, merged[:3])


def _task(tokenizer, model) -> Task:
    prompts = ["q : what colour is the sky ? a :", "q : 2 ? a :", "sky", "q : 7 ? a :"]
    answers = generate(model, tokenizer, prompts, max_new_tokens=4)
    refs = [answers[0], answers[1] + " wrong", answers[2], "no"]
    items = [TaskItem(f"i{k}", p, r) for k, (p, r) in enumerate(zip(prompts, refs, strict=True))]
    return Task("t", items, scorer="exact", generation=GenerationConfig(max_new_tokens=4))


def test_evaluate_and_indices(tiny) -> None:
    model, tokenizer = tiny
    task = _task(tokenizer, model)
    full = evaluate(model, tokenizer, task, batch_size=3)
    assert full.correct.dtype == bool
    assert full.correct.tolist()[:2] == [True, False]
    sub = evaluate(model, tokenizer, task, indices=np.array([2, 0]))
    assert sub.correct.tolist() == [full.correct[2], full.correct[0]]
    assert sub.answers == [full.answers[2], full.answers[0]]
    assert full.seconds > 0


def test_loglik_choice_matches_manual_argmax(tiny) -> None:
    import torch

    model, tokenizer = tiny
    choices = ("blue", "red green", "7")
    item = TaskItem("c", "q : what colour is the sky ? a :", "A", choices=choices)
    lls = []
    for c in choices:
        ctx = tokenizer(item.prompt)["input_ids"]
        full = tokenizer(item.prompt + " " + c, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0, :-1], -1)
        n = full.shape[1] - len(ctx)
        lls.append(float(logp[-n:].gather(1, full[0, 1:][-n:, None]).sum()))
    for norm in (False, True):
        scores = [
            ll / len((" " + c).encode()) if norm else ll for ll, c in zip(lls, choices, strict=True)
        ]
        best = "ABC"[int(np.argmax(scores))]
        for ref in "ABC":
            task = Task(
                "m",
                [dataclasses.replace(item, answer=ref)],
                scorer="loglik_choice",
                scorer_options={"norm": norm},
            )
            res = evaluate(model, tokenizer, task)
            assert res.answers == [best]
            assert bool(res.correct[0]) is (ref == best)


def test_cache_roundtrip_and_invalidation(tiny, tmp_path) -> None:
    import torch

    model, tokenizer = tiny
    task = _task(tokenizer, model)
    cache = CorrectnessCache(tmp_path)
    first = cache.get_or_compute(model, tokenizer, task)
    fp = model_fingerprint(model)
    np.testing.assert_array_equal(cache.get(fp, task), first)
    # a caller that already hashed the weights passes the fingerprint: same entry, no evaluation
    np.testing.assert_array_equal(cache.get_or_compute(None, None, task, fingerprint=fp), first)
    # a changed item, template or scorer option is a different key
    changed = dataclasses.replace(
        task, items=[dataclasses.replace(task.items[0], answer="x")] + task.items[1:]
    )
    assert task_fingerprint(changed) != task_fingerprint(task)
    assert cache.get(fp, changed) is None
    templ = dataclasses.replace(task, prompt_template="few shot\n{prompt}")
    assert cache.get(fp, templ) is None
    # a changed weight is a different model
    with torch.no_grad():
        p = next(model.parameters())
        old = p[0, 0].item()
        p[0, 0] += 1e-3
        try:
            assert model_fingerprint(model) != fp
        finally:
            p[0, 0] = old
    assert model_fingerprint(model) == fp
    # the cache really serves stored values
    cache.put(fp, task, ~first)
    np.testing.assert_array_equal(cache.get_or_compute(model, tokenizer, task), ~first)


def test_a_truncated_cache_file_is_recomputed_with_a_warning(tiny, tmp_path, caplog) -> None:
    import logging

    model, tokenizer = tiny
    task = _task(tokenizer, model)
    cache = CorrectnessCache(tmp_path)
    first = cache.get_or_compute(model, tokenizer, task)
    (path,) = tmp_path.rglob("*.npz")
    path.write_bytes(path.read_bytes()[:40])  # e.g. a worker killed by an older, in-place writer
    with caplog.at_level(logging.WARNING):
        again = cache.get_or_compute(model, tokenizer, task)
    np.testing.assert_array_equal(again, first)
    assert any("correctness cache file" in r.getMessage() and "recomputing" in r.getMessage()
               for r in caplog.records)
    np.testing.assert_array_equal(cache.get(model_fingerprint(model), task), first)  # rewritten
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporaries left


def test_loglik_choice_batched_equals_one_by_one(tiny) -> None:
    """Right-padded batches of (item, choice) rows give the same choices as one row at a time."""
    model, tokenizer = tiny
    items = [
        TaskItem(f"c{i}", prompt, "A", choices=choices)
        for i, (prompt, choices) in enumerate([
            ("q : what colour is the sky ? a :", ("blue", "red green", "7")),
            ("q : 2 + 2 ? a :", ("4", "five", "twenty two", "0")),
            ("q : a long question with many many words in it ? a :", ("yes", "no")),
        ])
    ]
    for norm in (False, True):
        task = Task("m", items, scorer="loglik_choice", scorer_options={"norm": norm})
        one = evaluate(model, tokenizer, task, batch_size=1)
        for batch_size in (2, 4, 64):
            assert evaluate(model, tokenizer, task, batch_size=batch_size).answers == one.answers
