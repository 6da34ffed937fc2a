"""Packaging: a light `import omni_lab`; kernels/ and widgets/ installed as omni_lab.kernels / omni_lab.widgets; no
top-level folder of the checkout shadows an installed distribution from the repository root (where pytest, REPLs,
notebooks and Ray workers put it on sys.path); CI installs exact versions within the declared ranges."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = [
    "torch",
    "transformers",
    "gradio",
    "gradio_client",
    "plotly",
    "triton",
    "jupyter",
    "jupyterlab",
    "ipywidgets",
    "anywidget",
    "captum",
    "ray",
]


def test_import_is_light():
    code = f"import omni_lab, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_mapped_packages_import_from_the_install():
    import omni_lab.kernels
    import omni_lab.widgets

    assert Path(omni_lab.kernels.__file__).parent == ROOT / "kernels" / "omni_lab_kernels"
    assert Path(omni_lab.widgets.__file__).parent == ROOT / "widgets" / "omni_lab_widgets"


# ------------------------------------------------------------------------------------------- nothing is shadowed
TOP_LEVEL_FOLDERS = sorted(
    path.name for path in ROOT.iterdir() if path.is_dir() and path.name.isidentifier() and path.name != "omni_lab"
)


def _at_root(code: str) -> str:
    """Run `code` in a fresh interpreter whose working directory is the repository root (as `python -c` puts it on
    sys.path, like a REPL, a notebook started there or `python -m pytest`); returns its stdout."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"from the repository root:\n{code}\nfailed:\n{result.stderr[-3000:]}"
    return result.stdout


def _installed_outside_the_checkout(path: str) -> bool:
    import sysconfig

    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    resolved = Path(path).resolve()  # (the venv may live inside the checkout: .venv/)
    return any(folder in resolved.parents for folder in site)


def test_no_top_level_folder_is_a_regular_package():
    """The mechanism: only omni_lab/ has an `__init__.py` at the top; kernels/ and widgets/ keep their sources in an
    inner package that setuptools maps onto omni_lab.kernels / omni_lab.widgets, and notebooks/ holds files only."""
    assert {"kernels", "widgets", "notebooks", "tests"} <= set(TOP_LEVEL_FOLDERS)
    packages = [name for name in TOP_LEVEL_FOLDERS if name != "tests" and (ROOT / name / "__init__.py").exists()]
    assert not packages, f"top-level folders that would shadow a distribution of the same name: {packages}"


def test_hub_kernels_and_transformers_import_from_the_repository_root():
    import importlib.metadata

    importlib.metadata.distribution("kernels")  # Hugging Face's, from the test extra: the name our folder shares
    location = _at_root("import transformers.integrations.hub_kernels, kernels; print(kernels.__file__)").strip()
    assert _installed_outside_the_checkout(location), f"`import kernels` at the root gave {location}"


def test_toy_lab_runs_from_the_repository_root():
    code = (
        "import omni_lab as ol; lab = ol.load('toy'); "
        "run = lab.run(lab.prompt('What colour is the circle?'), max_new_tokens=3); print(len(run.token_map))"
    )
    assert int(_at_root(code).strip()) > 0


def test_every_installed_distribution_wins_over_a_folder_of_the_same_name():
    import importlib.metadata

    provided = importlib.metadata.packages_distributions()
    clashing = [name for name in TOP_LEVEL_FOLDERS if name in provided]
    assert "kernels" in clashing  # the test extra installs Hugging Face's kernels, so this check is never empty
    code = (
        f"import importlib, json; print(json.dumps({{n: importlib.import_module(n).__file__ for n in {clashing!r}}}))"
    )
    locations = json.loads(_at_root(code))
    shadowed = {name: path for name, path in locations.items() if not _installed_outside_the_checkout(path or "")}
    assert not shadowed, f"a folder of the checkout shadows the installed distribution: {shadowed}"


@pytest.mark.slow
def test_wheel_contains_the_mapped_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("omni_lab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "omni_lab/kernels/__init__.py" in names and "omni_lab/widgets/__init__.py" in names
    subpackages = [path.relative_to(ROOT).as_posix() for path in (ROOT / "omni_lab").rglob("*.py")]
    missing = [path for path in subpackages if "__pycache__" not in path and path not in names]
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
    assert not any(name.startswith(("kernels/", "widgets/", "tests/", "notebooks/")) for name in names)
    shipped = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "omni_lab/toy/assets").rglob("*.*"))
    assert shipped and set(shipped) <= set(names), "the toy twin's checkpoint files must ship in the wheel"
    examples = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "omni_lab/playground/examples").glob("*.*"))
    assert examples and set(examples) <= set(names), "the playground's examples must ship in the wheel"
    notebooks = sorted(f"omni_lab/notebooks/{path.name}" for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 9 and set(notebooks) <= set(names), "the explore notebooks must ship in the wheel"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2  # the main job and the test suite
    test_command = next(command for command in commands if "pytest" in command)
    assert test_command in ci.splitlines()


def test_the_parts_import_one_way_with_no_cycle():
    """docs/dependency_graph.py reads every import (those inside functions too): no cycle between omni_lab's parts
    (studies and cluster were one), the core never imports a front end, and the executors know no study."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import dependency_graph
    finally:
        sys.path.remove(str(ROOT / "docs"))
    edges = dependency_graph.graph()
    assert dependency_graph.cycles(edges) == []
    core = ("lab", "forward", "run", "options", "token_map", "partition", "capture", "reduction", "media", "prompt")
    for part in core:
        assert not edges[part] & {"widgets", "playground", "cli", "studies", "cluster"}, (part, edges[part])
    assert "studies" not in edges["cluster"] | edges["executors"] and "cluster" not in edges["studies"]
    assert edges["kernels"] == set()  # leaves: tensors in, tensors out
