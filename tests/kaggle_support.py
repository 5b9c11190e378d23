"""Fixtures for the Kaggle tests: the emulator as a real server process and a client set-up per test.

The emulator runs as `kdarts-kernel emulate` in its own process with a clean environment, and the
tests drive the unmodified `kaggle` client against it over HTTP on 127.0.0.1. Each test gets its
own HOME, KDARTS_HOME and TMPDIR (from conftest) and its own KAGGLE_CONFIG_DIR holding a copy of
the emulator's credentials.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kdarts.kernel.backends.base import KernelStatus
from kdarts.kernel.backends.kaggle import KaggleBackend
from kdarts.kernel.render import KERNELSPEC, METADATA_FILE, Bundle
from kdarts.kernel.retry import RetryPolicy

USER = "emulated-user"
# Short delays keep the fault tests fast; the policy is otherwise the one users get.
FAST_RETRY = RetryPolicy(attempts=4, initial_delay=0.05, multiplier=2.0, max_delay=0.5)
CLIENT_VARIABLES = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_API_ENVIRONMENT",
    "KAGGLE_CONFIG_DIR",
    "KDARTS_KAGGLE_ENDPOINT",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "VERBOSE",
)


@dataclass
class Emulator:
    """A running `kdarts-kernel emulate` process and the credentials it accepts."""

    url: str
    root: Path
    credentials: Path
    user: str
    key: str
    log: Path
    process: subprocess.Popen

    def admin(self, method: str, name: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.url}/_emulator/{name}", json=body, auth=(self.user, self.key), timeout=10)
        response.raise_for_status()
        return response.json()

    def inject(self, **fault: Any) -> None:
        """Inject one fault, for example `inject(kind="rate_limit", target="GetKernel")`."""
        self.admin("POST", "faults", fault)

    def reset(self) -> None:
        self.admin("DELETE", "faults")
        self.admin("DELETE", "requests")

    def requests(self, target: str | None = None) -> list[dict[str, Any]]:
        """Return the served requests, oldest first, optionally only those of one RPC or `upload`/`download`."""
        served = self.admin("GET", "requests")["requests"]
        return [item for item in served if target is None or item["target"] == target]


def start_emulator(folder: Path, *, processing_seconds: float = 0.3) -> Emulator:
    """Start `kdarts-kernel emulate` on a free port with fresh credentials and wait until it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    key = f"kdarts-test-secret-{secrets.token_hex(12)}"
    credentials = folder / "server-credentials" / "kaggle.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"username": USER, "key": key}))
    credentials.chmod(0o600)
    ready = folder / "ready.json"
    log = folder / "emulator.log"
    home = folder / "server-home"
    home.mkdir()
    environment = {key_: value for key_, value in os.environ.items() if key_ not in CLIENT_VARIABLES}
    environment.update(HOME=str(home), KDARTS_HOME=str(home / ".kdarts"), TMPDIR=str(home))
    command = [
        sys.executable, "-c", "from kdarts.kernel.cli import main; main()",
        "emulate", "--port", "0", "--root", str(folder / "state"), "--credentials", str(credentials),
        "--processing-seconds", str(processing_seconds), "--ready-file", str(ready),
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
    deadline = time.monotonic() + 60
    while not ready.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the emulator did not start:\n{log.read_text()}")
        time.sleep(0.05)
    url = json.loads(ready.read_text())["url"]
    return Emulator(url=url, root=folder / "state", credentials=credentials, user=USER, key=key, log=log, process=process)


def stop_emulator(emulator: Emulator) -> None:
    emulator.process.send_signal(signal.SIGTERM)
    try:
        emulator.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait(timeout=10)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator process for a test module."""
    server = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield server
    stop_emulator(server)


def client_environment(monkeypatch: pytest.MonkeyPatch, folder: Path, emulator: Emulator, *, kaggle_json: bool = True) -> Path:
    """Point the client at the emulator with a fresh KAGGLE_CONFIG_DIR; return that folder."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config_dir = folder / "kaggle-config"
    config_dir.mkdir()
    if kaggle_json:
        (config_dir / "kaggle.json").write_text(json.dumps({"username": emulator.user, "key": emulator.key}))
        (config_dir / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("KDARTS_KAGGLE_ENDPOINT", emulator.url)
    monkeypatch.setenv("KDARTS_KAGGLE_POLL_SECONDS", "0.5")
    # The client keeps upload state under tempfile.gettempdir(), which caches the first TMPDIR it saw.
    monkeypatch.setattr(tempfile, "tempdir", None)
    return config_dir


@pytest.fixture
def kaggle_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A client set-up that reaches the emulator, with no faults pending and an empty request log."""
    config_dir = client_environment(monkeypatch, tmp_path, emulator)
    emulator.reset()
    yield config_dir
    emulator.reset()


@pytest.fixture
def backend(kaggle_env: Path) -> KaggleBackend:
    return KaggleBackend(retry=FAST_RETRY, dataset_timeout=60.0)


def tiny_bundle(folder: Path, owner: str, slug: str, cells: list[str], *, dataset_sources: list[str] | None = None, title: str | None = None) -> Bundle:
    """Write a bundle of a small notebook: one markdown cell, then one code cell per entry of `cells`."""
    notebook = new_notebook(cells=[new_markdown_cell("A test notebook."), *(new_code_cell(source) for source in cells)])
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    bundle_folder = folder / slug
    bundle_folder.mkdir(parents=True)
    notebook_path = bundle_folder / f"{slug}.ipynb"
    nbformat.write(notebook, notebook_path)
    metadata = {
        "id": f"{owner}/{slug}",
        "title": title or slug.replace("-", " "),
        "code_file": notebook_path.name,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_internet": False,
        "dataset_sources": dataset_sources or [],
    }
    (bundle_folder / METADATA_FILE).write_text(json.dumps(metadata))
    return Bundle(folder=bundle_folder, notebook=notebook_path, metadata=metadata, size=notebook_path.stat().st_size)


def wait_terminal(backend: KaggleBackend, ref: str, version: int, timeout: float = 90.0) -> KernelStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(ref, version)
        if status.terminal:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{ref} v{version} still {status.state} after {timeout} s")
        time.sleep(0.3)


def files_under(folder: Path) -> dict[str, bytes]:
    """Return every file under a folder as relative POSIX path -> contents."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
