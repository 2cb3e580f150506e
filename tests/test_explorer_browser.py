"""The heatmap explorer in a real browser: JupyterLab + headless Chromium (Debian's, driven by Playwright).

Starts JupyterLab on 127.0.0.1 (free port, empty token) in a temporary root holding a notebook that builds a
:class:`~ladeda_lib.viz.HeatmapExplorer` on a tiny dataset and two untrained students, runs all cells in
Chromium, then picks another image and moves the opacity slider, checking that the rendered PNG and the score
line change. Everything it starts (server, kernels, browser) is stopped afterwards.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and pip ``playwright`` (no browser download).
Skipped when ``/usr/bin/chromium`` is missing, unless ``LADEDA_REQUIRE_BROWSER=1`` (then it fails).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("LADEDA_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("LADEDA_REQUIRE_BROWSER") == "1"
SERVER_TIMEOUT_S = 90
UI_TIMEOUT_MS = 120_000

NOTEBOOK_SOURCE = """\
import os
from pathlib import Path

import torch

from ladeda_lib.data import detect_dataset
from ladeda_lib.models import TinyLaDeDa
from ladeda_lib.viz import HeatmapExplorer

torch.set_num_threads(1)
models = {}
for seed in (0, 1):
    torch.manual_seed(seed)
    models[f"student {seed}"] = TinyLaDeDa().eval()
index = detect_dataset(Path(os.environ["LADEDA_EXPLORER_DATA"]), warn=False)
explorer = HeatmapExplorer(index, models, display_size=128)
explorer"""


def _browser_missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (LADEDA_REQUIRE_BROWSER=1)")
    pytest.skip(f"{reason}; set LADEDA_REQUIRE_BROWSER=1 to make this a failure")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("0_real", "1_fake"):
        folder = root / "test" / "reddit" / cls
        folder.mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, size=(72, 96, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{cls[2:]}_{i}.png")


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_SOURCE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _stop(process: subprocess.Popen) -> None:
    """Stop the server (on SIGTERM it shuts its kernels down), then kill whatever it started that is still alive."""
    import psutil

    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=5)
    for proc in alive:  # a kernel that outlived its server
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium and playwright, or a skip (a failure with LADEDA_REQUIRE_BROWSER=1)."""
    if not CHROMIUM.exists():
        _browser_missing(f"{CHROMIUM} not found (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _browser_missing("playwright is not installed (pip install playwright)")
    return CHROMIUM


@pytest.fixture
def jupyterlab(chromium: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 with the explorer notebook; yields (base URL, server log)."""
    root = tmp_path / "lab"
    root.mkdir()
    _write_notebook(root / "explorer.ipynb")
    data = tmp_path / "data"
    _write_dataset(data)
    port = _free_port()
    env = dict(
        os.environ,
        LADEDA_EXPLORER_DATA=str(data),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab_settings"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        OMP_NUM_THREADS="1",
    )
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--allow-root", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, log
    finally:
        _stop(process)
        assert process.poll() is not None, "the JupyterLab server is still running"


VIEW = "img.ladeda-explorer-view"
SCORE = ".ladeda-explorer-score"
PNG_DIGEST = """async (selector) => {
    const img = document.querySelector(selector);
    if (!img || !img.src) return null;
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(digest)).map((b) => b.toString(16).padStart(2, "0")).join("");
}"""


def _wait_for_new_png(page, old: str, timeout_s: float = UI_TIMEOUT_MS / 1000) -> str:
    """Poll the digest of the explorer's picture until it differs from ``old``; return the new digest."""
    deadline = time.monotonic() + timeout_s
    while True:
        digest = page.evaluate(PNG_DIGEST, VIEW)
        if digest and digest != old:
            return digest
        if time.monotonic() > deadline:
            raise AssertionError(f"the explorer's picture did not change within {timeout_s:.0f} s")
        page.wait_for_timeout(200)


@pytest.mark.slow
def test_explorer_reacts_in_a_real_browser(chromium: Path, jupyterlab: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    base, log = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                  "--disable-extensions", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{base}/lab/tree/explorer.ipynb", wait_until="domcontentloaded")
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
            )
            page.evaluate(
                """async () => {
                    const panel = window.jupyterapp.shell.currentWidget;
                    await panel.sessionContext.ready;
                    await window.jupyterapp.commands.execute("notebook:run-all-cells");
                }"""
            )
            page.wait_for_selector(VIEW, state="visible")
            page.wait_for_function(f"() => document.querySelector('{SCORE}')?.innerText.includes('fake probability')")
            first_png = page.evaluate(PNG_DIGEST, VIEW)
            first_score = page.inner_text(SCORE)
            assert first_png and "real_0.png" in first_score

            # pick another image: the score line and the picture change
            page.select_option(".ladeda-explorer-image select", index=2)
            page.wait_for_function(f"() => document.querySelector('{SCORE}').innerText.includes('fake_0.png')")
            second_png = _wait_for_new_png(page, first_png)

            # move the opacity slider with the keyboard: the overlay (the picture) changes, the score does not
            score_before = page.inner_text(SCORE)
            page.focus(".ladeda-explorer-opacity .noUi-handle")
            for _ in range(6):
                page.keyboard.press("ArrowRight")
            _wait_for_new_png(page, second_png)
            assert page.inner_text(".ladeda-explorer-opacity .widget-readout") == "0.80"
            assert page.inner_text(SCORE) == score_before
        except Exception:
            print("--- JupyterLab log (tail) ---\n" + log.read_text()[-3000:])
            try:
                print("--- notebook as shown ---\n" + page.inner_text(".jp-Notebook", timeout=2000)[-3000:])
                page.screenshot(path=str(log.with_name("explorer_failure.png")))
                print(f"screenshot: {log.with_name('explorer_failure.png')}")
            except Exception as err:  # the page itself may be gone
                print(f"(no page contents: {err})")
            raise
        finally:
            browser.close()
