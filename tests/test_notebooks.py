"""The notebooks run top to bottom on a tiny phantom run, so they never rot: each from its own folder
in a copy of the repository layout, with no OASIS_GEN_* variable set, finding the run under runs/."""

import os
import shutil

import pytest

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
MAX_BYTES = 2 * 1024 * 1024  # committed with outputs, each stays small enough to read on GitHub


CASES = [(name, "two-level") for name in sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))]
CASES += [pytest.param(name, "single-level", marks=pytest.mark.slow)  # the two-level runs cover the shared cells
          for name in ("02_vqvae.ipynb", "03_priors_and_sampling.ipynb")]


@pytest.mark.parametrize("name, kind", CASES)
def test_notebook_runs_from_its_folder_and_finds_the_run(name, kind, request, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    run_dir = request.getfixturevalue("tiny_prior_run" if kind == "two-level" else "tiny_single_run")
    repository = tmp_path / "repository"
    os.makedirs(repository / "notebooks")
    shutil.copy(os.path.join(NOTEBOOKS, name), repository / "notebooks" / name)
    shutil.copytree(run_dir, repository / "runs" / "20260101-000000")
    for variable in [v for v in os.environ if v.startswith("OASIS_GEN_")]:
        monkeypatch.delenv(variable)
    # the package as `pip install -e .` makes it importable (a kernel started in notebooks/ has no repository path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.path.dirname(NOTEBOOKS),
                                                                    os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(str(repository / "notebooks" / name), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(repository / "notebooks")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert os.path.join("runs", "20260101-000000") in printed  # the run it found, not one named in the notebook
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook showed no figure"


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")))
def test_committed_notebooks_carry_their_figures_and_stay_small(name):
    import nbformat

    path = os.path.join(NOTEBOOKS, name)
    notebook = nbformat.read(path, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} is committed without its figures"
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{name} was committed with an error"
    assert os.path.getsize(path) < MAX_BYTES
