"""Packaging: a light `import omni_lab`, and kernels/ and widgets/ installed as omni_lab.kernels / omni_lab.widgets."""

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

    assert Path(omni_lab.kernels.__file__).parent == ROOT / "kernels"
    assert Path(omni_lab.widgets.__file__).parent == ROOT / "widgets"


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
    assert not any(name.startswith(("kernels/", "widgets/", "tests/")) for name in names)
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
