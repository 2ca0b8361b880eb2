"""The notebooks run top to bottom on a tiny phantom run, so they never rot."""

import os

import pytest

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


CASES = [(name, "two-level") for name in sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))]
CASES += [pytest.param(name, "single-level", marks=pytest.mark.slow)  # the two-level runs cover the shared cells
          for name in ("02_vqvae.ipynb", "03_priors_and_sampling.ipynb")]


@pytest.mark.parametrize("name, kind", CASES)
def test_notebook_runs(name, kind, request, tiny_phantom, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    run_dir = request.getfixturevalue("tiny_prior_run" if kind == "two-level" else "tiny_single_run")
    monkeypatch.setenv("OASIS_GEN_RUN_DIR", run_dir)
    monkeypatch.setenv("OASIS_GEN_DATA_DIR", tiny_phantom)
    monkeypatch.setenv("OASIS_GEN_NUM_SAMPLES", "6")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.path.dirname(NOTEBOOKS),
                                                                    os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook showed no figure"
