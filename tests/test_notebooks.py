"""The notebooks run top to bottom (nbclient), so they never rot; outputs are not committed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    cells = json.loads(path.read_text())["cells"]
    stale = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
    assert not stale, f"{path.name}: clear the outputs of cells {stale} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    monkeypatch.setenv("OPTUNA_MERGE3_ROOT", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    # The walkthrough reloads its exported merge and prints its accuracy on all items.
    if path.name == "walkthrough.ipynb":
        assert "reloaded merge: math_it accuracy on all items" in text
