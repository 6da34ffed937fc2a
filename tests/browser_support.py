"""Shared helpers for tests that drive a real headless Chromium: find it, launch it, refuse the network, run JupyterLab.

Playwright's own browser download is never used (it is not available on these machines): Playwright for Python
drives Debian's `chromium` package through `executable_path`. Tests that need a browser skip, naming what is
missing, only when no Chromium (or no playwright / jupyterlab) is installed, and fail instead where
`OMNI_LAB_REQUIRE_BROWSER=1` (CI).

    from tests.browser_support import chromium_browser, launch_chromium   # fixture + launcher
    def test_page(chromium_browser): page = chromium_browser.new_page() ...
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def find_chromium() -> str | None:
    """Path of a Chromium executable: `$OMNI_LAB_CHROMIUM`, Debian's `/usr/bin/chromium`, or `chromium` on PATH."""
    override = os.environ.get("OMNI_LAB_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing(*, jupyterlab: bool = False) -> list[str]:
    """What a browser test lacks: Chromium, the playwright package, and (when asked) jupyterlab."""
    needs = []
    if find_chromium() is None:
        needs.append("Chromium (apt-get install chromium; or set OMNI_LAB_CHROMIUM)")
    if importlib.util.find_spec("playwright") is None:
        needs.append("the playwright Python package (pip install playwright; its browser download is not needed)")
    if jupyterlab and importlib.util.find_spec("jupyterlab") is None:
        needs.append("jupyterlab (pip install 'omni-lab[notebook]')")
    return needs


REQUIRE_BROWSER = "OMNI_LAB_REQUIRE_BROWSER"


def skip_unless_browser(*, jupyterlab: bool = False) -> None:
    """pytest.skip naming what is missing, when something is; a failure instead where `$OMNI_LAB_REQUIRE_BROWSER=1`
    (`.ci/run` sets it, so browser tests cannot vanish from CI)."""
    needs = missing(jupyterlab=jupyterlab)
    if needs:
        message = "browser test needs " + "; ".join(needs)
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{message} ({REQUIRE_BROWSER}=1: browser tests must run here)", pytrace=False)
        pytest.skip(message)


def launch_chromium(playwright, **kwargs):
    """Launch Debian's Chromium headless through Playwright (never Playwright's own browser download).

    Args:
        playwright: the object `playwright.sync_api.sync_playwright().start()` (or its context manager) gives.
        kwargs: extra `chromium.launch` arguments.
    Returns:
        a Playwright `Browser`.
    """
    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: apt-get install chromium, or set OMNI_LAB_CHROMIUM")
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), **kwargs)


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless Chromium for the whole session (skips, naming what is missing, without one)."""
    skip_unless_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def fresh_chromium(chromium_browser):
    """A Chromium of its own for one test, launched through the session's Playwright and closed (its process ended)
    after it: a page left busy by that test cannot slow the tests after it. The playground's and JupyterLab's tests
    use it; in full-suite runs, the session browser's renderer was left spinning at 100% CPU after the playground
    test, and the JupyterLab test in the same browser then hung."""
    browser = chromium_browser.browser_type.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS))
    try:
        yield browser
    finally:
        browser.close()


def artifact_path(name: str) -> Path:
    """Where a test saves a screenshot or page: `tests/artifacts/` (or `$OMNI_LAB_TEST_ARTIFACTS`)."""
    folder = Path(os.environ.get("OMNI_LAB_TEST_ARTIFACTS", ARTIFACTS))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


class OfflinePage:
    """A page in its own browser context where every network request is refused and recorded.

    Attributes:
        page: the Playwright page.
        requests: URLs the page tried to fetch (other than the page's own file and inline `data:` URIs).
        refused: URLs the route handler refused.
        console_errors: console messages of type "error", and uncaught page errors.
    """

    def __init__(self, browser, viewport=(1400, 900)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.refused: list[str] = []
        self.console_errors: list[str] = []
        self._allowed: set[str] = set()
        self.context.route("**/*", self._route)
        self.page.on("request", self._on_request)
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def _route(self, route) -> None:
        url = route.request.url
        if url in self._allowed:
            route.continue_()
            return
        self.refused.append(url)
        route.abort()

    def _on_request(self, request) -> None:
        url = request.url
        if url not in self._allowed and not url.startswith("data:"):
            self.requests.append(url)

    def open_file(self, path: Path, wait_selector: str = ".main-svg", timeout_ms: int = 30_000) -> None:
        """Open a local file (its own URL is the one request allowed) and wait for a selector."""
        url = Path(path).resolve().as_uri()
        self._allowed.add(url)
        self.page.goto(url, wait_until="load", timeout=timeout_ms)
        self.page.wait_for_selector(wait_selector, timeout=timeout_ms)

    def close(self) -> None:
        self.context.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def jupyterlab_server(root: Path, timeout_s: float = 90.0):
    """Run JupyterLab on 127.0.0.1 (token auth, a free port) serving `root`; yields (base URL, token).

    Config, data, runtime and IPython folders are made under `root/.jupyter-home`, so the server neither reads nor
    writes the user's own; kernels run this interpreter (`sys.executable`) with omni_lab importable.
    """
    token = secrets.token_hex(16)
    port = free_port()
    home = root / ".jupyter-home"
    for name in ("config", "data", "runtime", "ipython", "settings", "workspaces"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),  # the xdist worker's share
    }
    notifications = home / "settings" / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True, exist_ok=True)
    (notifications / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {process.returncode}: {(root / 'jupyterlab.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"JupyterLab did not answer in {timeout_s:.0f} s: {(root / 'jupyterlab.log').read_text()}"
                )
            time.sleep(0.5)
        yield base, token
    finally:
        stop_process(process)
        log.close()


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """Terminate a server process; kill it if it has not exited after `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def accept_dialog(page, timeout_ms: int = 3_000) -> bool:
    """Accept a JupyterLab dialog (e.g. "Select Kernel") when one shows within `timeout_ms`; True if one did."""
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    try:
        button.wait_for(timeout=timeout_ms)
    except Exception:  # noqa: BLE001 (playwright's TimeoutError: no dialog came)
        return False
    button.click()
    return True
