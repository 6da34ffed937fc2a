"""Studies on Ray (local Ray, 2 CPUs, the toy twin): the same rows as the local sweep, a killed worker, an
interrupted and resumed study, bad cluster settings, and `Dataset` built from records and files."""

import json
import logging
import sqlite3
import sys

import pandas as pd
import pytest
import torch

import omni_lab as ol
from omni_lab.errors import OmniLabInputError

TIMING = ["encode_s", "reduce_s", "prefill_s"]
REDUCERS, RATES = ["divprune", "randomdrop"], [0.5, 0.75]
ROWS_PER_PROMPT = 1 + 2 * len(REDUCERS) * len(RATES)
NO_RAY = "ray is not installed: pip install 'omni-lab[cluster]' (or pip install 'ray>=2.9')"


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    return ol.studies.Dataset.shapesworld(40, families=["image", "audio"], seed=3)


@pytest.fixture(scope="module")
def local(twin_lab, data):
    """The local sweep every Ray run must reproduce (on one torch thread, as each 1-CPU Ray actor runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ol.studies.sweep(twin_lab, data, REDUCERS, RATES, max_new_tokens=1, progress_bar=False)
    finally:
        torch.set_num_threads(threads)


def same_rows(frame, expected):
    """Answers, kept tokens and the rest exactly; KL to float tolerance (another process, another thread count)."""
    assert list(frame.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(
        frame.drop(columns=TIMING).reset_index(drop=True),
        expected.drop(columns=TIMING).reset_index(drop=True),
        check_exact=False,
        atol=1e-5,
        rtol=1e-4,
    )


def stored(path):
    with sqlite3.connect(path) as connection:
        return pd.read_sql("select * from sweep", connection)


def cluster(**options):
    return ol.cluster.Ray(workers=2, gpus_per_worker=0, **options)


def after_chunks(monkeypatch, count, action):
    """Call `action()` in the driver right after it stores its `count`-th chunk (a chunk boundary, mid-study)."""
    from omni_lab.studies.common import RowStore

    original, stored_chunks = RowStore.append, []

    def append(self, frame):
        original(self, frame)
        stored_chunks.append(len(frame))
        if len(stored_chunks) == count:
            action()

    monkeypatch.setattr(RowStore, "append", append)
    return stored_chunks


@pytest.mark.slow
def test_ray_sweep_gives_the_local_rows(ray, local, data, tmp_path):
    out = tmp_path / "sweep.parquet"
    frame = ol.studies.sweep(
        "toy", data, REDUCERS, RATES, max_new_tokens=1, progress_bar=False, out=out, cluster=cluster(chunk_size=27)
    )
    assert len(frame) == len(data) * ROWS_PER_PROMPT
    same_rows(frame, local)
    assert frame.kept_tokens.min() < frame.prompt_tokens.min()  # the reducers did reduce
    assert set(frame.prompt_key) == set(data.keys)
    same_rows(_typed(pd.read_parquet(out)), local)
    assert not (tmp_path / "sweep.parquet.parts").exists()


def _typed(frame):
    from omni_lab.studies.sweep import typed

    return typed(frame)


@pytest.mark.slow
def test_a_killed_worker_still_gives_every_row_once(ray, local, data, tmp_path, twin_lab, monkeypatch):
    subset, out = data[:8], tmp_path / "killed.sqlite"
    killed = []

    def kill_one():  # each worker holds chunks in flight: its process dies, Ray restarts it and retries them
        name = sorted(name for name in ray.util.list_named_actors() if name.startswith("omni-lab-"))[0]
        ray.kill(ray.get_actor(name), no_restart=False)
        killed.append(name)

    after_chunks(monkeypatch, 1, kill_one)
    frame = ol.studies.sweep(
        twin_lab, subset, REDUCERS, RATES, max_new_tokens=1, progress_bar=False, out=out, cluster=cluster(chunk_size=9)
    )
    assert killed, "the worker was not killed mid-study"
    table = stored(out)
    assert len(table) == len(subset) * ROWS_PER_PROMPT
    assert not table.duplicated(["prompt_key", "reducer", "rate", "control_for"]).any()
    expected = local[local.prompt < len(subset)]
    same_rows(frame, expected)
    in_table_order = ["prompt", "reducer", "rate", "control_for"]  # the table holds the rows in arrival order
    same_rows(_typed(table).sort_values(in_table_order), expected.sort_values(in_table_order))


@pytest.mark.slow
def test_an_interrupted_study_resumes_without_recomputing(ray, local, data, tmp_path, twin_lab, caplog, monkeypatch):
    subset, out = data[:8], tmp_path / "resumed.sqlite"
    options = dict(max_new_tokens=1, progress_bar=False, out=out, cluster=cluster(chunk_size=9))

    def interrupt():
        raise KeyboardInterrupt  # as Ctrl-C would, in the driver, after two chunks are stored

    after_chunks(monkeypatch, 2, interrupt)
    with pytest.raises(KeyboardInterrupt):
        ol.studies.sweep(twin_lab, subset, REDUCERS, RATES, **options)
    monkeypatch.undo()
    written, total = len(stored(out)), len(subset) * ROWS_PER_PROMPT
    assert written == 2 * ROWS_PER_PROMPT  # chunk_size=9: one prompt a chunk
    with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
        frame = ol.studies.sweep(twin_lab, subset, REDUCERS, RATES, **options)
    assert f"sweep: {written} of {total} cells already in" in caplog.text
    assert f"sweep: computed {total - written} cells" in caplog.text  # the cells already written were not recomputed
    table = stored(out)
    assert len(table) == total and not table.duplicated(["prompt_key", "reducer", "rate", "control_for"]).any()
    same_rows(frame, local[local.prompt < len(subset)])


def test_a_local_rerun_resumes_from_its_output(twin_lab, tmp_path, caplog):
    data, out = ol.studies.Dataset.shapesworld(2, families=["image"], seed=5), tmp_path / "local.parquet"
    first = ol.studies.sweep(twin_lab, data[:1], ["randomdrop"], [0.5], max_new_tokens=1, progress_bar=False, out=out)
    with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
        both = ol.studies.sweep(twin_lab, data, ["randomdrop"], [0.5], max_new_tokens=1, progress_bar=False, out=out)
    assert "sweep: 3 of 6 cells already in" in caplog.text and "sweep: computed 3 cells" in caplog.text
    same_rows(both.iloc[:3], first)
    pd.testing.assert_frame_equal(_typed(pd.read_parquet(out)).drop(columns=TIMING), both.drop(columns=TIMING))


def test_bad_cluster_settings_name_the_fix(ray, twin_lab):
    data = ol.studies.Dataset.shapesworld(1, families=["image"])
    with pytest.raises(OmniLabInputError, match="GPUs but the Ray cluster has 0"):
        ol.studies.sweep(twin_lab, data, ["evs"], [0.5], cluster=ol.cluster.Ray(gpus_per_worker=2))
    with pytest.raises(OmniLabInputError, match="needs 3 CPUs but the Ray cluster has 2"):
        ol.studies.sweep(twin_lab, data, ["evs"], [0.5], cluster=ol.cluster.Ray(workers=3, gpus_per_worker=0))
    with pytest.raises(OmniLabInputError, match="no Ray cluster answers .*ray start --head"):
        ol.studies.sweep(
            twin_lab, data, ["evs"], [0.5], cluster=ol.cluster.Ray(address="127.0.0.1:9", gpus_per_worker=0)
        )
    with pytest.raises(OmniLabInputError, match=r"ol.cluster.Ray\(workers"):
        ol.studies.sweep(twin_lab, data, ["evs"], [0.5], cluster="ray")
    with pytest.raises(OmniLabInputError, match="give 'host:port'"):
        ol.cluster.ray.connect(ol.cluster.Ray(address="nowhere"))
    with pytest.raises(OmniLabInputError, match="Prompt carries tensors"):
        ol.studies.sweep(twin_lab, [twin_lab.prompt("hi")], ["evs"], [0.5], cluster=cluster())


def test_a_cluster_without_ray_installed_names_the_install(twin_lab, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    data = ol.studies.Dataset.shapesworld(1, families=["image"])
    with pytest.raises(OmniLabInputError, match=r"pip install 'omni-lab\[cluster\]'"):
        ol.studies.sweep(twin_lab, data, ["evs"], [0.5], cluster=cluster())


def test_ray_options_plumbing():
    assert ol.cluster.Ray(gpus_per_worker=0).resolved_device == "cpu"
    assert ol.cluster.Ray(gpus_per_worker=1).resolved_device == "cuda"
    many = ol.cluster.Ray(workers=4, gpus_per_worker=2)
    assert many.resolved_device == "auto"  # one model across the worker's GPUs (accelerate's device map)
    assert many.actor_options() == {"num_cpus": 1, "num_gpus": 2, "max_restarts": 3, "max_task_retries": 3}
    assert ol.cluster.Ray(gpus_per_worker=0.5).resolved_device == "cuda"  # two workers share a GPU
    for bad in ({"workers": 0}, {"chunk_size": 0}, {"gpus_per_worker": -1}, {"gpus_per_worker": 1.5}):
        with pytest.raises(OmniLabInputError, match="ol.cluster.Ray"):
            ol.cluster.Ray(**bad)
    with pytest.raises(OmniLabInputError, match="runs on 'cpu'"):
        ol.cluster.Ray(gpus_per_worker=0, device="cuda")


def test_importing_omni_lab_and_a_local_sweep_never_import_ray():
    import subprocess

    code = (
        "import sys, omni_lab as ol, omni_lab.cluster, omni_lab.studies; ol.cluster.Ray(); "
        "data = ol.studies.Dataset.shapesworld(1, families=['image']); "
        "frame = ol.studies.sweep(ol.load('toy', progress=False), data, ['randomdrop'], [0.5], max_new_tokens=1, "
        "progress_bar=False); assert len(frame) == 3; assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dataset_rows_keys_and_files(twin_lab, tmp_path):
    from omni_lab.toy.shapesworld import eval_seed, sample

    world = ol.studies.Dataset.shapesworld(5, families=["video", "audio"], seed=2)
    assert [row["family"] for row in world] == ["video", "audio", "video", "audio", "video"]
    assert world[2]["seed"] == eval_seed(2, "video", 1) and world.keys[2] == f"shapesworld/video/{world[2]['seed']}"
    prompt, example = world.prompt(twin_lab, 1), sample(world[1]["seed"], "audio")
    assert prompt.reference == example.answer and prompt.text == example.prompt(twin_lab).text
    assert world.keys == ol.studies.Dataset.shapesworld(5, families=["video", "audio"], seed=2).keys  # stable
    records = [{"text": "What colour?", "images": ["red.png"], "reference": "red"}, "Count to three."]
    data = ol.studies.Dataset.from_records(records, base=tmp_path)
    assert data[0]["images"] == [str(tmp_path / "red.png")] and data[1]["text"] == "Count to three."
    assert data.keys == ol.studies.Dataset.from_records(records, base=tmp_path).keys and len(set(data.keys)) == 2
    lines = tmp_path / "data.jsonl"
    lines.write_text(
        "\n".join(json.dumps(record) for record in [{"text": "a", "key": "first"}, {"seed": 7, "family": "text"}])
    )
    from_lines = ol.studies.Dataset.from_file(lines)
    assert from_lines.keys == ["first", "shapesworld/text/7"]
    pd.DataFrame([{"text": "a", "video": "clip.mp4", "reference": "left"}]).to_parquet(tmp_path / "data.parquet")
    from_parquet = ol.studies.Dataset.from_file(tmp_path / "data.parquet")
    assert from_parquet[0]["video"] == str(tmp_path / "clip.mp4") and from_parquet[0]["reference"] == "left"
    for bad, message in [
        ([{"txt": "a"}], "unknown fields"),
        ([{"text": ""}], "non-empty `text`"),
        ([{"seed": 1, "family": "smell"}], "family="),
        ([{"text": "a", "key": "k"}, {"text": "b", "key": "k"}], "unique"),
    ]:
        with pytest.raises(OmniLabInputError, match=message):
            ol.studies.Dataset.from_records(bad)
