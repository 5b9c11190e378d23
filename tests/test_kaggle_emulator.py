"""The emulator's side of the protocol: raw HTTP, and the unmodified `kaggle` command line through it as a proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from kaggle_support import (  # noqa: F401 - fixtures
    Emulator,
    backend,
    emulator,
    kaggle_env,
    tiny_bundle,
)
from kdarts.kernel.backends.kaggle import KaggleBackend

SAVE_KERNEL = "/api/v1/kernels.KernelsApiService/SaveKernel"
START_UPLOAD = "/api/v1/blobs.BlobApiService/StartBlobUpload"


def kaggle_command(emulator: Emulator, config_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run the `kaggle` command line with the emulator as its HTTP proxy."""
    environment = dict(os.environ)
    for name in ("KDARTS_KAGGLE_ENDPOINT", "NO_PROXY", "no_proxy"):
        environment.pop(name, None)
    environment.update(KAGGLE_CONFIG_DIR=str(config_dir), KAGGLE_API_ENVIRONMENT="LOCALHOST", HTTP_PROXY=emulator.url)
    script = "import sys; from kaggle.cli import main; sys.argv[0] = 'kaggle'; main()"
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, env=environment, timeout=120)


def test_source_of_1mb_rejected(emulator: Emulator) -> None:
    body = {"slug": f"{emulator.user}/too-large", "text": "a" * 1_000_000, "language": "python", "kernelType": "script"}

    response = requests.post(emulator.url + SAVE_KERNEL, json=body, auth=(emulator.user, emulator.key), timeout=30)

    assert response.status_code == 400
    assert response.json()["message"] == "The kernel source must be less than 1 megabytes in size."


def test_unauthenticated_request_rejected(emulator: Emulator) -> None:
    response = requests.post(emulator.url + SAVE_KERNEL, json={}, auth=(emulator.user, "wrong-key"), timeout=30)

    assert response.status_code == 401
    assert response.json()["code"] == 401


def test_upload_resumes_with_content_range(emulator: Emulator) -> None:
    auth = (emulator.user, emulator.key)
    data = os.urandom(1000)
    started = requests.post(emulator.url + START_UPLOAD, json={"name": "part.bin", "contentLength": 1000}, auth=auth, timeout=30).json()
    url = started["createUrl"]

    first = requests.put(url, data=data[:400], headers={"Content-Range": "bytes 0-399/1000"}, timeout=30)
    query = requests.put(url, data=b"", headers={"Content-Range": "bytes */1000"}, timeout=30)
    rest = requests.put(url, data=data[400:], headers={"Content-Range": "bytes 400-999/1000"}, timeout=30)

    assert (first.status_code, first.headers["Range"]) == (308, "bytes=0-399")
    assert (query.status_code, query.headers["Range"]) == (308, "bytes=0-399")
    assert rest.status_code == 200


def test_upload_unknown_token_expired(emulator: Emulator) -> None:
    response = requests.put(f"{emulator.url}/_upload/unknown-token", data=b"", headers={"Content-Range": "bytes */5"}, timeout=30)

    assert response.status_code == 404


def test_version_while_processing_rejected(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "one.txt").write_text("one\n")
    (folder / "dataset-metadata.json").write_text(
        json.dumps({"id": f"{backend.owner}/kaggle-test-early", "title": "Early version test", "licenses": [{"name": "other"}]})
    )
    emulator.inject(kind="slow_processing", target="CreateDataset", seconds=30)
    created = backend.api.dataset_create_new(str(folder), quiet=True, dir_mode="zip")

    with pytest.raises(requests.HTTPError) as caught:
        backend.api.dataset_create_version(str(folder), "too early", quiet=True, dir_mode="zip")

    assert created.status == "ok"
    assert backend.api.dataset_status(f"{backend.owner}/kaggle-test-early") == "blobs_received"
    assert caught.value.response.status_code == 403


def test_missing_kernel_name_fails_like_papermill(backend: KaggleBackend, tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-no-kernelspec", ["print(1)"])
    notebook = json.loads(bundle.notebook.read_text())
    del notebook["metadata"]["kernelspec"]
    bundle.notebook.write_text(json.dumps(notebook))

    pushed = backend.push(bundle)
    status = backend.status(pushed.ref, pushed.version)

    assert status.state == "error"
    assert status.message == "No kernel name found in notebook and no override provided."


def test_kaggle_command_through_proxy(emulator: Emulator, kaggle_env: Path, tmp_path: Path) -> None:
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    bundle = tiny_bundle(tmp_path, emulator.user, "kaggle-test-proxy", ["print('through the proxy')"])

    pushed = kaggle_command(emulator, kaggle_env, "kernels", "push", "-p", str(bundle.folder))
    status = kaggle_command(emulator, kaggle_env, "kernels", "status", f"{emulator.user}/kaggle-test-proxy")

    assert "Kernel version 1 successfully pushed" in pushed.stdout
    assert 'has status "KernelWorkerStatus.QUEUED"' in status.stdout
    assert emulator.requests("SaveKernel")[0]["path"] == SAVE_KERNEL


def test_backend_through_proxy(emulator: Emulator, kaggle_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDARTS_KAGGLE_ENDPOINT")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("HTTP_PROXY", emulator.url)

    kaggle = KaggleBackend()

    assert kaggle.dataset_exists(f"{kaggle.owner}/never-published") is False
    assert emulator.requests("GetDatasetStatus")[0]["status"] == 404
