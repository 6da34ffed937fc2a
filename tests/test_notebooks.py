"""The explore notebooks (notebooks/): committed without outputs, copied by `omni-lab notebooks`, and each one executed
end to end on the toy twin with nbclient, failing on any error or failed `assert` cell.

Execution uses a kernelspec written to a temporary JUPYTER_PATH that runs this very interpreter (`sys.executable`),
so nothing global (no `ipykernel install`) is needed and the kernel sees the same omni_lab; the runtime and IPython
folders are temporary too, the working directory is a temporary folder, and HF_HUB_OFFLINE=1 holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = [
    "00_quickstart",
    "10_token_reduction_maps",
    "20_expert_routing",
    "30_attention_over_modalities",
    "35_logit_lens_and_patching",
    "40_pruned_token_study",
    "45_matched_ablation",
    "50_audio",
    "55_attribution",
    "60_real_checkpoint",
]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 600


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_numbered_set_is_there():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED
    assert not (NOTEBOOK_DIR / "__init__.py").exists(), "notebooks/ must not be a regular package (it would shadow)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_is_stripped(path):
    """No outputs, no execution counts, no saved widget state: `python -m nbstripout notebooks/*.ipynb` before a commit."""
    notebook = _read(path)
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run `python -m nbstripout {path.relative_to(ROOT)}`"
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name} stores widget state; strip it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_parameters_prose_and_checks(path):
    """The first code cell is the parameters cell (papermill's tag), there is prose, and code cells assert claims."""
    cells = _read(path)["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), f"{path.name}: first code cell not tagged"
    parameters = "".join(code[0]["source"])
    assert "SOURCE" in parameters and "DEVICE" in parameters, f"{path.name}: parameters name the model and device"
    assert sum(cell["cell_type"] == "markdown" for cell in cells) >= 3, f"{path.name}: too little prose"
    asserts = sum("".join(cell["source"]).count("assert ") for cell in code)
    assert asserts >= 2, f"{path.name}: a notebook asserts what it shows ({asserts} asserts)"


# ----------------------------------------------------------------------------------------------------- the command
def test_notebooks_command_copies_the_set(tmp_path, capsys):
    from omni_lab import cli

    target = tmp_path / "mine"
    assert cli.main(["notebooks", str(target), "--copy-only"]) == 0
    copied = sorted(path.name for path in target.glob("*.ipynb"))
    assert copied == sorted(path.name for path in NOTEBOOKS)
    for path in NOTEBOOKS:
        assert (target / path.name).read_bytes() == path.read_bytes()
    assert str(target) in capsys.readouterr().out


def test_notebooks_command_keeps_edits_unless_forced(tmp_path):
    from omni_lab import cli

    assert cli.main(["notebooks", str(tmp_path), "--copy-only"]) == 0
    edited = tmp_path / NOTEBOOKS[0].name
    edited.write_text("{}", encoding="utf-8")
    assert cli.main(["notebooks", str(tmp_path), "--copy-only"]) == 0
    assert edited.read_text(encoding="utf-8") == "{}", "a second copy must not overwrite the user's notebooks"
    assert cli.main(["notebooks", str(tmp_path), "--copy-only", "--force"]) == 0
    assert edited.read_bytes() == NOTEBOOKS[0].read_bytes()


def test_notebooks_command_refuses_a_file(tmp_path, capsys):
    from omni_lab import cli

    target = tmp_path / "taken"
    target.write_text("not a folder", encoding="utf-8")
    assert cli.main(["notebooks", str(target), "--copy-only"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_notebooks_command_needs_no_model_import():
    """`omni-lab notebooks --copy-only` copies without importing torch or transformers (it must be instant)."""
    code = (
        "import sys, tempfile; from omni_lab import cli; "
        "assert cli.main(['notebooks', tempfile.mkdtemp(), '--copy-only']) == 0; "
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_notebooks_command_serves_jupyterlab_on_localhost(tmp_path):
    """The real command: JupyterLab on 127.0.0.1 serving the copied notebooks (no browser opened). The command becomes
    the server (exec), so the signal that stops `omni-lab notebooks` stops JupyterLab and the kernel it started: no
    process it started outlives it."""
    pytest.importorskip("jupyterlab")
    psutil = pytest.importorskip("psutil")
    from tests.browser_support import free_port, stop_process

    port, token = free_port(), "omni-lab-test-token"
    home = tmp_path / "home"
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    target = tmp_path / "lab"
    command = [sys.executable, "-m", "omni_lab.cli", "notebooks", str(target), "--no-browser", "--port", str(port)]
    log = tmp_path / "server.log"
    api = f"http://127.0.0.1:{port}/api"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
        started: list = []
        try:
            listing, deadline = None, time.monotonic() + 120
            while listing is None:
                assert process.poll() is None, f"the server exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"JupyterLab did not answer: {log.read_text()}"
                try:
                    with urllib.request.urlopen(f"{api}/contents?token={token}", timeout=2) as response:
                        listing = json.load(response)
                except OSError:
                    time.sleep(0.5)
            served = sorted(item["name"] for item in listing["content"] if item["name"].endswith(".ipynb"))
            assert served == sorted(path.name for path in NOTEBOOKS)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as response:
                assert response.status == 200 and b"JupyterLab" in response.read()
            server = psutil.Process(process.pid)
            assert "jupyterlab" in server.cmdline(), f"omni-lab should exec JupyterLab: {server.cmdline()}"
            request = urllib.request.Request(f"{api}/kernels?token={token}", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 201
            deadline = time.monotonic() + 60
            while not any("ipykernel" in _command_line(child, psutil) for child in server.children(recursive=True)):
                assert time.monotonic() < deadline, "the kernel never started"
                time.sleep(0.5)
            started = server.children(recursive=True)
        finally:
            stop_process(process)
        _, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"still running after `omni-lab notebooks` was stopped: {[p.cmdline() for p in alive]}"


def _command_line(process, psutil) -> str:
    """A process's command line, or "" for one that ended (or became a zombie) while JupyterLab's children were being
    listed: a short-lived helper can exit between `children()` and `cmdline()`."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return ""


# --------------------------------------------------------------------------------------------------- execution
@contextlib.contextmanager
def private_kernel(base: Path):
    """Environment for nbclient: a `python3` kernelspec running this interpreter under `base`, private Jupyter and
    IPython folders, the hub offline, two torch threads (an xdist worker's share under pytest). Used by the tests and
    by docs/notebooks/make_pictures.py."""
    spec_dir = base / "path" / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (omni-lab)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(base / "path"))
        patch.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
        patch.setenv("JUPYTER_CONFIG_DIR", str(base / "config"))
        patch.setenv("IPYTHONDIR", str(base / "ipython"))
        patch.setenv("JUPYTER_PLATFORM_DIRS", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_VERBOSITY", "error")
        patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1))))
        yield


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    with private_kernel(tmp_path_factory.mktemp("jupyter")):
        yield


def execute(path: Path, workdir: Path):
    """Execute a notebook with nbclient in `workdir`; returns (the executed notebook, seconds)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    started = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - started


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_on_the_toy_twin(path, kernel_env, tmp_path):
    from nbclient.exceptions import CellExecutionError

    try:
        executed, seconds = execute(path, tmp_path)
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")
    print(f"{path.stem}: {seconds:.1f} s")
    kernel = executed.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3"
    errors = [
        output
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
