"""docs/config.md is the key reference generated from the config's declarations: keep it current."""

from __future__ import annotations

from pathlib import Path

from optuna_merge3.config import config_reference, declared_keys

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_generated_from_the_declarations() -> None:
    assert DOC.read_text(encoding="utf-8") == config_reference(), (
        "docs/config.md is stale: python -m optuna_merge3.config > docs/config.md")


def test_every_key_is_documented_and_typed() -> None:
    for table, f, hint in declared_keys():
        assert f.metadata["doc"], f"{table}.{f.name} has no doc line"
        assert hint is not None
