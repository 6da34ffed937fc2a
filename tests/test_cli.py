"""The `omni-lab` command."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from omni_lab.cli import main


def test_info_on_the_meta_full_model_prints_the_pattern_and_33b(capsys):
    assert main(["info", "random:full", "--device", "meta"]) == 0
    out = capsys.readouterr().out
    assert "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME" in out
    assert "33.0B" in out and "33,015,546,816" in out and "81,920" in out


def test_info_json(capsys):
    assert main(["info", "random:toy", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layer_pattern"] == "MEM*EM*E" and info["layers"]["attention"] == 2


def test_run_json_with_files(tmp_path, capsys):
    from tests import synth

    image = synth.write_image(tmp_path / "a.png", 64, 64)
    audio = synth.write_audio(tmp_path / "b.wav", seconds=0.5)
    video = synth.write_video(tmp_path / "c.mp4", count=8, fps=4)
    code = main(
        [
            "run",
            "random:toy",
            "--text",
            "What?",
            "--image",
            str(image),
            "--audio",
            str(audio),
            "--video",
            str(video),
            "--fps",
            "4",
            "--max-new-tokens",
            "3",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    # 8 frames at 4 fps -> 4 tubelets; 64x48 frames under a 64-patch target -> 6 x 8 patches -> 12 tokens each
    assert result["tokens_before"]["audio"] == 7 and result["tokens_before"]["video"] == 4 * 12
    assert len(result["generated_ids"]) == 3 and set(result["timings"]) >= {"encode_s", "prefill_s", "decode_s"}


def test_run_demo_and_bad_input_exit_code(capsys, tmp_path):
    assert main(["run", "random:toy", "--demo", "--max-new-tokens", "2"]) == 0
    assert "answer:" in capsys.readouterr().out
    missing = tmp_path / "missing.png"
    assert main(["run", "random:toy", "--text", "x", "--image", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_main_job_asks_the_toy_twin_a_held_out_question(capsys):
    from omni_lab.toy import shapesworld

    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), family="omni", task="count_and_direction")
    assert main(["run", "--demo"]) == 0  # the README's main job: the toy twin is the default source
    out = capsys.readouterr().out
    assert f"question: {example.question!r}" in out and f"ground truth: {example.answer!r}" in out
    assert f"answer: {example.answer!r}" in out  # a held-out example the twin gets right (the card: 93% on this task)


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("omni-lab")
    command = [str(script)] if script.exists() else [shutil.which("omni-lab")]
    result = subprocess.run(
        [*command, "info", "random:full", "--device", "meta"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "33.0B" in result.stdout


def _fake_playground(monkeypatch):
    """Record what `omni-lab playground` would load and serve, without loading or serving."""
    import types

    import omni_lab
    from omni_lab.playground import app

    calls = {}

    def load(source, device="cpu", **kwargs):
        calls["load"] = (source, device)
        return types.SimpleNamespace(source=types.SimpleNamespace(spec=source))

    monkeypatch.setattr(omni_lab, "load", load)
    monkeypatch.setattr(app, "launch", lambda lab, **kwargs: calls.setdefault("launch", kwargs))
    return calls


def test_playground_serves_the_toy_twin_on_localhost_without_a_share_link(monkeypatch, capsys):
    pytest.importorskip("gradio")
    calls = _fake_playground(monkeypatch)
    assert main(["playground"]) == 0
    assert calls["load"] == ("toy", "cpu")
    assert calls["launch"] == {"host": "127.0.0.1", "port": 7860, "share": False, "max_file_mb": 50.0}
    assert "open http://127.0.0.1:7860/" in capsys.readouterr().out


def test_playground_passes_model_device_host_port_share_and_upload_limit(monkeypatch):
    pytest.importorskip("gradio")
    calls = _fake_playground(monkeypatch)
    arguments = ["playground", "--model", "random:small", "--device", "auto", "--host", "0.0.0.0", "--port", "8123"]
    assert main([*arguments, "--share", "--max-file-mb", "5"]) == 0
    assert calls["load"] == ("random:small", "auto")
    assert calls["launch"] == {"host": "0.0.0.0", "port": 8123, "share": True, "max_file_mb": 5.0}


@pytest.mark.parametrize(
    "arguments,message",
    [(["--port", "70000"], "is not a TCP port"), (["--max-file-mb", "0"], "must be positive")],
)
def test_playground_bad_arguments_exit_2_naming_them(monkeypatch, capsys, arguments, message):
    pytest.importorskip("gradio")
    calls = _fake_playground(monkeypatch)
    assert main(["playground", *arguments]) == 2
    assert message in capsys.readouterr().err and "load" not in calls
