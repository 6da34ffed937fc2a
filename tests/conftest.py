"""Shared fixtures: offline hub, small thread count, one lab per preset per session, synthetic media files."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (the README's test command runs one worker per core) each worker gets its share of the cores,
# and so does every process it starts (notebook kernels, CLI and server subprocesses): a kernel on two OpenMP threads
# beside a busy worker on a 2-core machine ran its notebook 6-10x slower than alone.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(THREADS)
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # set, not defaulted: the workers inherit the controller's value
    os.environ[_name] = str(THREADS)

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


# pytest-xdist (`-n auto --dist loadscope` in pyproject.toml) hands each worker whole units of tests: a module, so its
# module fixtures (servers, the Ray cluster) start once, except that every notebook is a unit of its own, so the
# notebooks (the longest tests) spread over the workers. Units go out longest first (`LONGEST_FIRST`, then collection
# order), so no worker is left with a long one at the end. xdist's own `--dist loadgroup` cannot do this with pytest 9:
# it writes the group into `item._nodeid`, which pytest 9 no longer reads, so every test was scheduled on its own.
LONGEST_FIRST = (  # by their seconds in a full run on this 2-core machine
    "test_notebooks.py::test_notebook_runs_on_the_toy_twin",
    "test_cluster.py",
    "test_notebooks.py",
    "test_widgets_browser.py",
    "test_toy.py",
    "test_playground_compare_browser.py",
    "test_toy_shapesworld.py",
    "test_playground.py",
)


def _unit(nodeid: str) -> str:
    """The scheduling unit of a test id: its module, or the test itself for a notebook run."""
    module, _, rest = nodeid.partition("::")
    return nodeid if rest.startswith("test_notebook_runs_on_the_toy_twin") else module


def _rank(nodeid: str) -> int:
    path, _, rest = nodeid.partition("::")
    name = f"{path.rsplit('/', 1)[-1]}::{rest}"  # the module's file name and the test (whose id may hold "/")
    return next((rank for rank, prefix in enumerate(LONGEST_FIRST) if name.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: collection order within a rank


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order of the collection
    return Units(config, log)


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
