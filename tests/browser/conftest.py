"""A JupyterLab server in a fresh root holding only a copy of ``notebooks/``, and a browser.

As a student who has just cloned the course: no ``data/`` folder, no JupyterLab settings or
workspace of their own, quick mode in the server's environment (``MMLAB_QUICK=1``), so every
kernel it starts runs the notebooks small. The browser is Debian's Chromium (Playwright's own
download cannot work offline), found at ``MMLAB_CHROMIUM`` or on the PATH.
"""

from __future__ import annotations

import json
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
from lab import REPO

SCREENSHOTS = REPO / "build" / "browser"  # CI keeps this folder as an artifact
SERVER_START_S = 90
# Chromium as root in a container, on a machine whose network is closed: no sandbox, and no
# background connections that would each fail (the flags the machine's own probe uses).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab's own settings for a quiet first start: no news or update toast over the cells.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def chromium_path() -> str:
    found = os.environ.get("MMLAB_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "no Chromium: `make test-browser` installs Debian's (apt-get install chromium), "
            "or set MMLAB_CHROMIUM to a Chromium or Chrome binary"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """``(base_url, token, root)`` of a JupyterLab serving a fresh copy of the notebooks."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(
        REPO / "notebooks", root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data")
    )
    home = tmp_path_factory.mktemp("jupyter-home")
    for name, value in SETTINGS.items():
        target = home / "settings" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "MMLAB_QUICK": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    log = home / "server.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells, read the model
        "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base_url}/api/status?token={token}", process, log)
        yield base_url, token, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh page; what it logs as an error or throws is kept on ``page.mmlab_errors``."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.mmlab_errors = errors
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
