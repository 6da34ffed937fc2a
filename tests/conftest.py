"""Shared fixtures: offline hub, small thread count, one lab per preset per session, synthetic media files."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (the README's test command runs one worker per core) each worker gets its share of the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# One headless Chromium for the whole session, shared by every browser test (Playwright's sync API allows one at a
# time per thread, so each test module must not define its own).
from tests.browser_support import chromium_browser, fresh_chromium  # noqa: E402, F401


@pytest.fixture(scope="session")
def toy_lab():
    import omni_lab as ol

    return ol.load("random:toy")


@pytest.fixture(scope="session")
def small_lab():
    import omni_lab as ol

    return ol.load("random:small")


@pytest.fixture(scope="session")
def full_meta_lab():
    """The released architecture on the meta device: real processors and budgets, no weights."""
    import omni_lab as ol

    return ol.load("random:full", device="meta")


@pytest.fixture(scope="session")
def twin_lab():
    """The trained toy twin shipped in the package (ShapesWorld)."""
    import omni_lab as ol

    return ol.load("toy")


# pytest-xdist (`--dist loadgroup` in pyproject.toml) keeps each test module on one worker, so its module fixtures
# (servers, the Ray cluster) start once. The modules that start Ray, Jupyter kernels or a browser against a local
# server share one group and so run one after another, as they did before the suite ran on two workers: in full-suite
# runs with two of them on different workers at once, the Ray study, the JupyterLab test and the Compare browser test
# each hung (the page's renderer spinning, Ray restarting workers, an answer that never streamed), while every one of
# them passes alone or beside its own kind. Ports picked free and then bound (Ray's, the kernels' ZMQ ports, the test
# servers') are the suspect; the cause is not proven.
SERIAL_GROUP = "ray-kernels-browsers"
SERIAL_MODULES = {
    "test_cluster.py",
    "test_notebooks.py",
    "test_widgets_browser.py",
    "test_playground_browser.py",
    "test_playground_compare_browser.py",
    "test_playground_chat_browser.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP if module in SERIAL_MODULES else module))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process the tests started (JupyterLab, a kernel, Gradio, Chromium, Ray...) outlives them.

    Runs after every fixture is torn down. Processes get a grace period to exit; the ones still alive are named,
    then terminated so the run cannot hang on them."""
    if session.config.pluginmanager.hasplugin("dsession"):  # xdist's controller: its children are the workers,
        return  # each of which runs this check on the processes its own tests started
    try:
        import psutil
    except ImportError:  # the check needs psutil (in the test extra); without it the suite still runs
        return
    children = [child for child in psutil.Process().children(recursive=True) if _alive(child)]
    _, alive = psutil.wait_procs(children, timeout=15)
    alive = [child for child in alive if _alive(child)]
    if not alive:
        return
    lines = []
    for child in alive:
        try:
            lines.append(f"  pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.kill()
        except psutil.Error:
            continue
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(lines)} process(es) started by the tests were still running after them (now killed):"
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _alive(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
