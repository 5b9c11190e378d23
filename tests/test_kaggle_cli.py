"""`kdarts-kernel push search --backend kaggle --wait` against `kdarts-kernel emulate`, as a user runs it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kaggle_support import Emulator, emulator, kaggle_env  # noqa: F401 - fixtures
from kdarts.kernel.jobs import verify_manifest
from kdarts.plan import DARTS_PRIMITIVES, load_plan

TINY_SEARCH = [
    "--profile", "local",
    "--set", "epochs=1", "--set", "layers=3", "--set", "init_channels=4", "--set", "nodes=2",
    "--set", "batch_size=32", "--set", "max_train_images=256",
]  # fmt: skip


def run_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from kdarts.kernel.cli import main; main()", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def files_containing(folders: list[Path], secrets: list[bytes], skip: set[Path]) -> list[str]:
    """Return every file under `folders` that contains one of `secrets`."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.resolve() not in skip:
                data = path.read_bytes()
                found += [str(path) for secret in secrets if secret in data]
    return found


@pytest.mark.slow
def test_cli_push_wait_status_pull(emulator: Emulator, kaggle_env: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()

    pushed = run_cli("push", "search", "--backend", "kaggle", "--wait", *TINY_SEARCH, cwd=project)
    status = run_cli("status", "search", cwd=project)
    pulled = run_cli("pull", "search", "-o", str(tmp_path / "pulled-again"), cwd=project)

    assert pushed.returncode == 0, pushed.stderr
    # The folder name of a pulled version depends on the backend, so it is found by its plan.
    outputs = [path.parent for path in (project / "runs" / "search").glob("*/plan.json")]
    assert len(outputs) == 1, outputs
    output = outputs[0]
    assert load_plan(output / "plan.json").primitives == list(DARTS_PRIMITIVES)
    assert verify_manifest(output) > 0
    assert (output / "log.txt").is_file()
    assert status.stdout.strip().endswith("v1: complete")
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "pulled-again" / "plan.json").read_bytes() == (output / "plan.json").read_bytes()

    # No bundle, notebook, log or output may hold the key, nor the Basic auth header made from it.
    secrets = [emulator.key.encode(), base64.b64encode(f"{emulator.user}:{emulator.key}".encode())]
    credential_files = {emulator.credentials.resolve(), (kaggle_env / "kaggle.json").resolve()}
    scanned = [project, tmp_path / "pulled-again", tmp_path / "home", tmp_path / "tmp", emulator.root, emulator.log.parent]
    assert list(emulator.root.rglob("kdarts-search.ipynb")), "the pushed notebook should be among the scanned files"
    assert files_containing([kaggle_env], secrets, set()) == [str(kaggle_env / "kaggle.json")]
    assert files_containing(scanned, secrets, credential_files) == []
    for result in (pushed, status, pulled):
        assert emulator.key not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "error: no Kaggle credentials found"), ("not json", "kaggle.json at {path} is not valid JSON")],
    ids=["missing", "malformed"],
)
def test_cli_credentials_error_one_line(emulator: Emulator, kaggle_env: Path, tmp_path: Path, content: str | None, expected: str) -> None:
    path = kaggle_env / "kaggle.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)

    result = run_cli("push", "search", "--backend", "kaggle", *TINY_SEARCH, cwd=tmp_path)

    assert result.returncode == 1
    assert expected.format(path=path) in result.stderr
    assert "Traceback" not in result.stderr


def test_status_refuses_other_endpoint(emulator: Emulator, kaggle_env: Path, tmp_path: Path) -> None:
    from kdarts.errors import BackendError
    from kdarts.kernel.jobs import PushRecord, backend_for

    record = PushRecord("search", "kaggle", "emulated-user/kdarts-search", 3, 0.0, endpoint="http://127.0.0.1:9")

    with pytest.raises(BackendError) as raised:
        backend_for(record)

    assert "was pushed to http://127.0.0.1:9" in str(raised.value)
    assert f"now talks to {emulator.url.rstrip('/')}" in str(raised.value)
    assert emulator.requests("GetKernelSessionStatus") == []
