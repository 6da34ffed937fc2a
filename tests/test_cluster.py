"""Studies on Ray (local Ray, 2 CPUs, the toy twin): the same rows as the local sweep, a killed worker, an
interrupted and resumed study, bad cluster settings, and `Dataset` built from records and files; the per-prompt
studies (reinsertion, pruned contribution, routing shift, expert specialisation) over a Dataset, here and on Ray,
against each prompt run here alone."""

import contextlib
import json
import logging
import sqlite3
import sys

import pandas as pd
import psutil
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
        return ol.studies.sweep(twin_lab, data, REDUCERS, RATES, max_new_tokens=1, progress=False)
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
        "toy", data, REDUCERS, RATES, max_new_tokens=1, progress=False, out=out, cluster=cluster(chunk_size=27)
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
        actor = ray.get_actor(name)
        before = ray.get(actor.pid.remote())
        worker = psutil.Process(before)
        worker.kill()  # SIGKILL, as the OOM killer would
        worker.wait(timeout=60)  # gone: the next call can only be answered by a restarted process
        after = ray.get(actor.pid.remote(), timeout=120)
        killed.append((name, before, after))

    after_chunks(monkeypatch, 1, kill_one)
    frame = ol.studies.sweep(
        twin_lab, subset, REDUCERS, RATES, max_new_tokens=1, progress=False, out=out, cluster=cluster(chunk_size=9)
    )
    assert killed, "the worker was not killed mid-study"
    ((_, before, after),) = killed
    assert after != before, "Ray did not restart the killed worker in a new process"
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
    options = dict(max_new_tokens=1, progress=False, out=out, cluster=cluster(chunk_size=9))

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
    assert f"sweep: computing {total - written} cells on" in caplog.text  # only the cells not written go to Ray
    table = stored(out)
    assert len(table) == total and not table.duplicated(["prompt_key", "reducer", "rate", "control_for"]).any()
    same_rows(frame, local[local.prompt < len(subset)])


def count_cells(monkeypatch, module, name: str) -> list:
    """Wrap a study's cell function (looked up when the study runs) to record the keys of the cells it computes."""
    import importlib

    module = importlib.import_module(module)
    original, computed = getattr(module, name), []

    def counting(lab, prompt_of, cells, **options):
        computed.extend(cell.key for cell in cells)
        return original(lab, prompt_of, cells, **options)

    monkeypatch.setattr(module, name, counting)
    return computed


def test_a_local_rerun_resumes_from_its_output(twin_lab, tmp_path, caplog, monkeypatch):
    data, out = ol.studies.Dataset.shapesworld(2, families=["image"], seed=5), tmp_path / "local.parquet"
    computed = count_cells(monkeypatch, "omni_lab.studies.sweep", "compute_cells")
    first = ol.studies.sweep(twin_lab, data[:1], ["randomdrop"], [0.5], max_new_tokens=1, progress=False, out=out)
    assert len(computed) == 3 and {key[0] for key in computed} == {data.keys[0]}
    computed.clear()
    with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
        both = ol.studies.sweep(twin_lab, data, ["randomdrop"], [0.5], max_new_tokens=1, progress=False, out=out)
    assert "sweep: 3 of 6 cells already in" in caplog.text and "sweep: computing 3 cells on" in caplog.text
    assert len(computed) == 3 and {key[0] for key in computed} == {data.keys[1]}  # the first prompt's: not again
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
        "progress=False); assert len(frame) == 3; assert 'ray' not in sys.modules, 'ray imported'"
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
    tasks = ol.studies.Dataset.shapesworld(4, tasks=["events/flash_colour", "sync/beep_flash"], seed=2)
    assert [(row["family"], row["task"]) for row in tasks][:2] == [("events", "flash_colour"), ("sync", "beep_flash")]
    assert tasks.keys[2] == f"shapesworld/events/flash_colour/{eval_seed(2, 'events', 1)}"
    hard = sample(eval_seed(2, "sync", 1), "sync", task="beep_flash")
    assert (
        tasks.prompt(twin_lab, 3).text == hard.prompt(twin_lab).text
        and tasks.prompt(twin_lab, 3).reference == hard.answer
    )
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
        ([{"seed": 1, "family": "image", "task": "flash_colour"}], "not a image task"),
        ([{"text": "a", "task": "colour"}], "give it with `seed`"),
        ([{"text": "a", "key": "k"}, {"text": "b", "key": "k"}], "unique"),
    ]:
        with pytest.raises(OmniLabInputError, match=message):
            ol.studies.Dataset.from_records(bad)


# ------------------------------------------------------------------ per-prompt studies over a Dataset, here and on Ray
PER_PROMPT = ["reinsertion", "pruned_contribution", "routing_shift"]
CELL_FUNCTIONS = {
    "reinsertion": ("omni_lab.studies.reinsertion", "compute_cells"),
    "pruned_contribution": ("omni_lab.studies.contribution", "compute_cells"),
    "routing_shift": ("omni_lab.studies.routing", "shift_cells"),
}
OPTIONS = {
    "reinsertion": {"groups": "tubelet"},
    "pruned_contribution": {"max_tokens": 3, "seed": 1},
    "routing_shift": {},
}


@pytest.fixture(scope="module")
def four():
    """One prompt of each ShapesWorld family with media (DivPrune acts on all three media)."""
    return ol.studies.Dataset.shapesworld(4, families=["image", "video", "audio", "omni"], seed=4)


def reducer():
    return ol.reducers.DivPrune(0.5)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread here, as each 1-CPU Ray actor runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def each_prompt_alone(lab, data, study: str):
    """`study` run here on each prompt of `data` alone, its result laid out as the many-prompt table documents."""
    frames = []
    for index, key in enumerate(data.keys):
        prompt, tags = data.prompt(lab, index), {"prompt": index, "prompt_key": key}
        if study == "routing_shift":
            frames.append(ol.studies.routing_shift(lab, prompt, reducer()).assign(**tags))
            continue
        result = getattr(ol.studies, study)(lab, prompt, reducer(), progress=False, **OPTIONS[study])
        tags |= {"target": result.target, "target_token": result.target_token}
        if study == "reinsertion":
            frames.append(result.groups.assign(**tags))
            continue
        sets = pd.DataFrame(
            {
                "ablated": ["dropped set", "kept set"],
                "tokens": [result.dropped, result.kept],
                "effect": [result.dropped_set_effect, result.kept_set_effect],
                "kl": [result.dropped_set_kl, result.kept_set_kl],
            }
        )
        tokens = result.tokens.assign(ablated="token", tokens=1)
        frames.append(pd.concat([sets, tokens], ignore_index=True).assign(**tags, spearman=result.spearman))
    return pd.concat(frames, ignore_index=True)


def same_table(frame, expected):
    """The same rows and values (float tolerance: another process); missing token columns compared as missing."""
    assert sorted(frame.columns) == sorted(expected.columns)
    as_plain = {column: "float64" for column in frame.columns if str(frame[column].dtype) == "Int64"}
    if "dropped" in frame.columns:
        as_plain["dropped"] = "boolean"
    pd.testing.assert_frame_equal(
        frame.astype(as_plain).reset_index(drop=True),
        expected[frame.columns].astype(as_plain).reset_index(drop=True),
        check_dtype=False,
        check_exact=False,
        atol=1e-5,
        rtol=1e-4,
    )


def same_specialization(result, expected):
    for table in ("load", "entropy", "top_tokens"):
        pd.testing.assert_frame_equal(
            getattr(result, table), getattr(expected, table), check_exact=False, atol=1e-5, rtol=1e-4
        )


@pytest.mark.slow
def test_per_prompt_studies_over_a_dataset_equal_each_prompt_alone_and_resume(
    twin_lab, four, tmp_path, caplog, monkeypatch
):
    for study, suffix in zip(PER_PROMPT, ["sqlite", "parquet", "sqlite"], strict=True):
        run, out = getattr(ol.studies, study), tmp_path / f"{study}.{suffix}"
        expected = each_prompt_alone(twin_lab, four, study)
        first = run(twin_lab, four[:2], reducer(), progress=False, out=out, **OPTIONS[study])
        same_table(first, expected[expected.prompt < 2])
        computed = count_cells(monkeypatch, *CELL_FUNCTIONS[study])
        with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
            caplog.clear()
            frame = run(twin_lab, four, reducer(), progress=False, out=out, **OPTIONS[study])
        assert f"{study}: 2 of 4 cells already in" in caplog.text and f"{study}: computing 2 cells" in caplog.text
        assert computed == four.keys[2:], computed  # the two prompts already stored were not computed again
        monkeypatch.undo()
        same_table(frame, expected)
        if suffix == "sqlite":
            with sqlite3.connect(out) as connection:
                table = pd.read_sql(f"select * from {study}", connection)
            assert list(dict.fromkeys(table.prompt_key)) == four.keys and len(table) == len(frame)  # none twice
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(out)[["prompt_key"]], frame[["prompt_key"]])
            assert not (tmp_path / f"{study}.parquet.parts").exists()
    listed = ol.studies.reinsertion(twin_lab, [four.prompt(twin_lab, 1)], reducer(), progress=False)
    same_table(listed, each_prompt_alone(twin_lab, four[1:2], "reinsertion").assign(prompt_key="0"))

    prompts = [four.prompt(twin_lab, index) for index in range(len(four))]
    expected = ol.studies.expert_specialization(twin_lab, prompts, reducer=reducer(), top=3, progress=False)
    out = tmp_path / "specialization.sqlite"
    ol.studies.expert_specialization(twin_lab, four[:3], reducer=reducer(), top=3, progress=False, out=out)
    with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
        result = ol.studies.expert_specialization(twin_lab, four, reducer=reducer(), top=3, progress=False, out=out)
    assert "expert_specialization: 3 of 4 cells already in" in caplog.text
    same_specialization(result, expected)  # pooled from rows read back for three prompts and one computed now


@pytest.mark.slow
@pytest.mark.parametrize("study", PER_PROMPT)
def test_ray_per_prompt_study_gives_each_prompts_local_rows(ray, twin_lab, four, study):
    with one_thread():
        expected = each_prompt_alone(twin_lab, four, study)
    run = getattr(ol.studies, study)
    frame = run("toy", four, reducer(), progress=False, cluster=cluster(chunk_size=1), **OPTIONS[study])
    same_table(frame, expected)
    assert list(dict.fromkeys(frame.prompt_key)) == four.keys


@pytest.mark.slow
def test_ray_expert_specialization_pools_as_the_local_run(ray, twin_lab, four):
    with one_thread():
        prompts = [four.prompt(twin_lab, index) for index in range(len(four))]
        expected = ol.studies.expert_specialization(twin_lab, prompts, reducer=reducer(), top=3, progress=False)
    result = ol.studies.expert_specialization(
        twin_lab, four, reducer=reducer(), top=3, progress=False, cluster=cluster(chunk_size=1)
    )
    same_specialization(result, expected)
    assert set(result.top_tokens.prompt) <= set(range(len(four))) and len(result.top_tokens)


@pytest.mark.slow
def test_an_interrupted_ray_reinsertion_resumes_without_recomputing(ray, twin_lab, four, tmp_path, caplog, monkeypatch):
    out = tmp_path / "reinsertion.sqlite"
    options = dict(progress=False, out=out, cluster=cluster(chunk_size=1), **OPTIONS["reinsertion"])

    def interrupt():
        raise KeyboardInterrupt  # as Ctrl-C would, in the driver, after one prompt is stored

    after_chunks(monkeypatch, 1, interrupt)
    with pytest.raises(KeyboardInterrupt):
        ol.studies.reinsertion(twin_lab, four, reducer(), **options)
    monkeypatch.undo()
    with sqlite3.connect(out) as connection:
        assert pd.read_sql("select prompt_key from reinsertion", connection).prompt_key.nunique() == 1
    with caplog.at_level(logging.INFO, logger="omni_lab.studies"):
        frame = ol.studies.reinsertion(twin_lab, four, reducer(), **options)
    assert "reinsertion: 1 of 4 cells already in" in caplog.text and "reinsertion: computing 3 cells" in caplog.text
    with sqlite3.connect(out) as connection:
        table = pd.read_sql("select * from reinsertion", connection)
    assert len(table) == len(frame) and not table.duplicated(["prompt_key", "group"]).any()
    with one_thread():
        same_table(frame, each_prompt_alone(twin_lab, four, "reinsertion"))


def test_bad_cluster_values_on_the_per_prompt_studies_name_the_fix(twin_lab, four):
    prompt = four.prompt(twin_lab, 0)
    for study in [*PER_PROMPT, "expert_specialization"]:
        run = getattr(ol.studies, study)
        arguments = (twin_lab, four) if study == "expert_specialization" else (twin_lab, four, reducer())
        with pytest.raises(OmniLabInputError, match=r"ol.cluster.Ray\(workers"):
            run(*arguments, cluster="ray")
        with pytest.raises(OmniLabInputError, match="Prompt carries tensors"):
            run(*arguments[:1], [prompt], *arguments[2:], cluster=cluster())
        if study != "expert_specialization":
            with pytest.raises(OmniLabInputError, match="many prompts: give an ol.studies.Dataset"):
                run(twin_lab, prompt, reducer(), cluster=cluster())
    with pytest.raises(OmniLabInputError, match="needs a Lab"):
        ol.studies.routing_shift("toy", four, reducer())


def test_a_thread_pool_of_labs_gives_the_local_rows(twin_lab, data):
    """A third executor, with no change to the studies: two labs in this process, one thread each."""
    from omni_lab.executors import Threads

    subset = data[:4]
    with one_thread():
        expected = ol.studies.sweep(twin_lab, subset, REDUCERS, RATES, max_new_tokens=1, progress=False)
        pool = Threads([twin_lab, ol.load("toy", progress=False)], chunk_size=5)
        frame = ol.studies.sweep("toy", subset, REDUCERS, RATES, max_new_tokens=1, progress=False, cluster=pool)
        same_rows(frame, expected)
        shifted = ol.studies.routing_shift(twin_lab, subset, reducer(), progress=False, cluster=pool)
        same_table(shifted, ol.studies.routing_shift(twin_lab, subset, reducer(), progress=False))
    with pytest.raises(OmniLabInputError, match="list of at least one Lab"):
        Threads([])


@pytest.mark.slow
def test_ray_matched_ablation_gives_the_local_rows(ray, twin_lab, four):
    arguments = dict(rates=[0.7], options=ol.RunOptions(max_new_tokens=2), repeats=1, progress=False)
    with one_thread():
        local = ol.studies.matched_ablation(twin_lab, four, ["evs"], **arguments)
    remote = ol.studies.matched_ablation("toy", four, ["evs"], cluster=cluster(chunk_size=1), **arguments)
    timing = ["ttft_s", "prefill_s"]
    same_table(remote.rows.drop(columns=timing), local.rows.drop(columns=timing))
    assert remote.arms == local.arms and (remote.rows.ttft_s > 0).all()
