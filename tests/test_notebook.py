"""The notebook of examples/ runs in a real Jupyter kernel: functions defined in its cells
reach the slaves of the multiprocessing fabric."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).parent.parent / "examples" / "relaxation.ipynb"


def outputs(notebook: object) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells  # type: ignore[attr-defined]
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.timeout(300)
def test_the_notebook_runs_its_cells_on_the_slaves(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    text = outputs(notebook)
    assert "Error" not in text
    fitted = [line for line in text.splitlines() if line.startswith("fitted ")]
    assert len(fitted) == 1 and fitted[0].startswith("fitted 11")  # residues with a peak
    within, total = (int(word) for word in text.split(" fitted rates lie")[0].split()[-3::2])
    assert within >= 0.9 * total
