"""benchmarks/gpu_check.sh --dry-run: the prepared GPU script's own code at tiny sizes on CPU writes the full JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    files = list(out.glob("gpu_check_dry-run_*.json"))
    assert len(files) == 1, (files, result.stdout[-2000:])
    assert result.stdout.strip().splitlines()[-1] == str(files[0])  # the script names the file it wrote
    return json.loads(files[0].read_text())


def test_dry_run_writes_every_step_and_figure(dry_run):
    check = _check_module()
    assert dry_run["schema"] == check.SCHEMA and dry_run["mode"] == "dry-run"
    environment = dry_run["environment"]
    for name in check.ENVIRONMENT:
        assert check.is_figure(environment[name]) or isinstance(environment[name], str), name
    assert environment["device"] == "cpu (dry run)" and "skipped" in environment["driver"]
    expected = [name for names in check.STEPS.values() for name in names]
    assert sorted(dry_run["steps"]) == sorted(expected)
    for name, record in dry_run["steps"].items():
        # every step ran to the end on CPU: a dry run that records an error is a broken GPU script
        assert record["status"] == "ok", (name, record.get("error"), record.get("traceback"))
        assert record["rows"], name
        for row in record["rows"]:
            kind = row.get("kernel", name)
            assert sorted(row["figures"]) == sorted(check.FIGURES[kind]), (name, row)
            for figure, value in row["figures"].items():
                assert check.is_figure(value), (name, figure, value)
                assert value != check.skip(check.NOT_REACHED), (name, figure)


def test_dry_run_measures_what_it_can_on_cpu(dry_run):
    """Only the gpu-marked tests are skipped on CPU (with the reason); every other figure is a number."""
    steps = dry_run["steps"]
    assert all("skipped" in value for value in steps["tests"]["rows"][0]["figures"].values())
    lengths = [row["tokens"] for row in steps["kernels"]["rows"]]
    assert lengths == [16, 32, 64, 16, 32, 64]
    for name in ("kernels", "load", "capture_overhead", "decode", "evs", "video_memory"):
        for row in steps[name]["rows"]:
            skipped = {key: value for key, value in row["figures"].items() if isinstance(value, dict)}
            assert not skipped, (name, row)
    for row in steps["kernels"]["rows"]:  # the Triton kernels (interpreted) agree with the torch reference
        assert row["figures"]["max_abs_error"] < 1e-4, row
    evs = {row["rate"]: row["figures"] for row in steps["evs"]["rows"]}
    assert evs[0.0]["ideal_ratio"] == 1.0 and evs[0.5]["tokens"] < evs[0.0]["tokens"]
    assert all(figures["same_first_token"] is True for figures in evs.values())
    for row in steps["capture_overhead"]["rows"]:
        assert row["figures"]["tokens"] >= row["target_tokens"]


def test_a_killed_part_leaves_reasons_not_holes(tmp_path):
    """`close` after a part was killed mid-step: the step says so and its unmeasured figures carry the reason."""
    check = _check_module()
    report = check.Report(tmp_path / "r.json", dry_run=True)
    report.data["steps"]["evs"]["status"] = "running"
    rows = report.plan("evs", [{"rate": 0.5}])
    rows[0]["figures"]["tokens"] = 12
    report.write()
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "close", "--out", str(report.path),
         "--killed", "model after 285 s"],
        check=True, capture_output=True,
    )  # fmt: skip
    data = json.loads(report.path.read_text())
    evs = data["steps"]["evs"]
    assert evs["status"] == "killed" and "model after 285 s" in evs["error"]
    assert evs["rows"][0]["figures"]["tokens"] == 12
    reason = evs["rows"][0]["figures"]["ideal_ratio"]["skipped"]
    assert reason.startswith("killed:") and "model after 285 s" in reason
    assert data["steps"]["decode"]["status"] == "not run"
    assert "skipped" in data["environment"]["device"]
