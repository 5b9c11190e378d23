"""The Kaggle backend through the real `kaggle` client against the emulator, over HTTP."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

from kaggle_support import (  # noqa: F401 - fixtures
    FAST_RETRY,
    Emulator,
    backend,
    client_environment,
    emulator,
    files_under,
    kaggle_env,
    tiny_bundle,
    wait_terminal,
)
from kdarts.errors import BackendError
from kdarts.kernel.backends import get_backend
from kdarts.kernel.backends.kaggle import KaggleApiError, KaggleBackend, endpoint_url, find_failure, kernel_state, output_path
from kdarts.kernel.jobs import PushRecord, pull_kernel
from kdarts.kernel.retry import RetryPolicy, classify, parse_retry_after

NESTED_SLUG = "kaggle-test-nested"
FAILING_CELLS = [
    # Lists the attached dataset as mounted for the kernel, then writes more files than one listing
    # page of an old client (500) could hold.
    "import hashlib, json\n"
    "from pathlib import Path\n"
    f"inputs = Path('../input/{NESTED_SLUG}')\n"
    "listing = sorted(f'{p.relative_to(inputs).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}' for p in inputs.rglob('*') if p.is_file())\n"
    "Path('input-listing.txt').write_text('\\n'.join(listing) + '\\n')\n"
    "for i in range(520):\n"
    "    path = Path(f'many/part-{i % 13:02d}/file-{i:04d}.txt')\n"
    "    path.parent.mkdir(parents=True, exist_ok=True)\n"
    "    path.write_text(f'file {i}\\n')",
    # A manifest that lists one file the kernel never wrote.
    "entries = [{'path': p.as_posix(), 'size': p.stat().st_size, 'sha256': hashlib.sha256(p.read_bytes()).hexdigest()}\n"
    "           for p in sorted(Path('.').rglob('*')) if p.is_file()]\n"
    "entries.append({'path': 'ghost.txt', 'size': 1, 'sha256': '0' * 64})\n"
    "Path('manifest.json').write_text(json.dumps({'files': entries}))\n"
    "print('manifest entries:', len(entries))",
    "raise ValueError('boom from the third code cell')",
]
FAILING_CELL_INDEX = 3


def write_nested(folder: Path) -> Path:
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "top.txt").write_text("top level\n")
    (folder / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    (folder / "sub" / "deeper" / "notes.txt").write_text("two levels down\n")
    return folder


@pytest.fixture(scope="module")
def failed_kernel(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """A kernel version that read a nested dataset, wrote 520+ files and failed in its third code cell."""
    folder = tmp_path_factory.mktemp("failed-kernel")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("HOME", str(folder))
        monkeypatch.setenv("KDARTS_HOME", str(folder / ".kdarts"))
        monkeypatch.setenv("TMPDIR", str(folder))
        client_environment(monkeypatch, folder, emulator)
        kaggle = KaggleBackend(retry=FAST_RETRY)
        source = write_nested(folder / "nested")
        kaggle.publish_dataset(f"{kaggle.owner}/{NESTED_SLUG}", source, title="Nested test data")
        bundle = tiny_bundle(folder / "bundle", kaggle.owner, "kaggle-test-failing", FAILING_CELLS, dataset_sources=[f"{kaggle.owner}/{NESTED_SLUG}"])
        pushed = kaggle.push(bundle)
        wait_terminal(kaggle, pushed.ref, pushed.version)
    yield pushed.ref, pushed.version, source


# Credentials ------------------------------------------------------------------------------------


def test_credentials_missing_is_clear_error(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_dir = client_environment(monkeypatch, tmp_path, emulator, kaggle_json=False)

    with pytest.raises(BackendError) as caught:
        get_backend("kaggle")

    message = str(caught.value)
    assert "no Kaggle credentials found" in message
    assert str(config_dir) in message
    assert "KAGGLE_API_TOKEN" in message


def test_credentials_rejected_key_names_fix(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_dir = client_environment(monkeypatch, tmp_path, emulator)
    (config_dir / "kaggle.json").write_text(json.dumps({"username": emulator.user, "key": "not-the-key"}))
    kaggle = KaggleBackend(retry=FAST_RETRY)

    with pytest.raises(KaggleApiError) as caught:
        kaggle.dataset_exists(f"{emulator.user}/some-dataset")

    assert caught.value.status == 401
    assert f"rejected the user name and key in kaggle.json at {config_dir / 'kaggle.json'}" in str(caught.value)
    assert "not-the-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"username": "emulated-user"}', "lacks 'key'"),
        ("not json", "is not valid JSON"),
        ('["emulated-user"]', "contains a JSON list instead of an object"),
        ('{"username": "emulated-user", "key": ""}', "has an empty 'key'"),
    ],
)
def test_kaggle_json_malformed_named(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, problem: str) -> None:
    config_dir = client_environment(monkeypatch, tmp_path, emulator)
    (config_dir / "kaggle.json").write_text(content)

    with pytest.raises(BackendError) as caught:
        KaggleBackend(retry=FAST_RETRY)

    message = str(caught.value)
    assert f"kaggle.json at {config_dir / 'kaggle.json'} {problem}" in message
    assert "no Kaggle credentials found" not in message
    assert "KAGGLE_API_TOKEN" in message


def test_kaggle_json_malformed_token_still_used(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_dir = client_environment(monkeypatch, tmp_path, emulator)
    (config_dir / "kaggle.json").write_text("not json")
    monkeypatch.setenv("KAGGLE_API_TOKEN", emulator.key)

    kaggle = KaggleBackend(retry=FAST_RETRY)

    assert kaggle.credential_source.description == "the access token in KAGGLE_API_TOKEN"
    assert kaggle.dataset_exists(f"{emulator.user}/never-published") is False


@pytest.mark.parametrize("in_file", [False, True], ids=["variable", "file"])
def test_token_rejected_despite_kaggle_json(emulator: Emulator, kaggle_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_file: bool) -> None:
    token = "kdarts-test-expired-token"
    token_file = tmp_path / "token.txt"
    token_file.write_text(token)
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file) if in_file else token)

    with pytest.raises(BackendError) as caught:
        KaggleBackend(retry=FAST_RETRY)

    message = str(caught.value)
    place = f"the access token in {token_file} (the file KAGGLE_API_TOKEN names)" if in_file else "the access token in KAGGLE_API_TOKEN"
    assert f"Kaggle rejected {place}" in message
    assert f"unset KAGGLE_API_TOKEN to use the user name and key in kaggle.json at {kaggle_env / 'kaggle.json'}" in message
    assert token not in message
    # It stops before any call that the rejected token would fail.
    assert [item["target"] for item in emulator.requests()] == ["IntrospectToken"]


def test_token_401_names_token(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client_environment(monkeypatch, tmp_path, emulator)
    monkeypatch.setenv("KAGGLE_API_TOKEN", emulator.key)
    kaggle = KaggleBackend(retry=FAST_RETRY)
    emulator.reset()
    emulator.inject(kind="reject_credentials", target="GetDatasetStatus")

    with pytest.raises(KaggleApiError) as caught:
        kaggle.dataset_exists(f"{emulator.user}/some-dataset")

    assert caught.value.status == 401
    assert f"rejected the access token in KAGGLE_API_TOKEN for user {emulator.user}" in str(caught.value)
    assert emulator.key not in str(caught.value)
    assert len(emulator.requests("GetDatasetStatus")) == 1


def test_environment_key_rejected_names_variables(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client_environment(monkeypatch, tmp_path, emulator, kaggle_json=False)
    monkeypatch.setenv("KAGGLE_USERNAME", emulator.user)
    monkeypatch.setenv("KAGGLE_KEY", "kdarts-test-wrong-key")
    kaggle = KaggleBackend(retry=FAST_RETRY)

    with pytest.raises(KaggleApiError) as caught:
        kaggle.dataset_exists(f"{emulator.user}/some-dataset")

    assert caught.value.status == 401
    assert "rejected the user name and key in KAGGLE_USERNAME and KAGGLE_KEY" in str(caught.value)
    assert "kdarts-test-wrong-key" not in str(caught.value)


def test_access_token_authenticates(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client_environment(monkeypatch, tmp_path, emulator, kaggle_json=False)
    monkeypatch.setenv("KAGGLE_API_TOKEN", emulator.key)

    kaggle = KaggleBackend(retry=FAST_RETRY)

    assert kaggle.owner == emulator.user
    assert kaggle.dataset_exists(f"{emulator.user}/never-published") is False


def test_access_token_rejected_is_clear_error(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client_environment(monkeypatch, tmp_path, emulator, kaggle_json=False)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "expired-token")

    with pytest.raises(BackendError, match="rejected the access token in KAGGLE_API_TOKEN"):
        KaggleBackend(retry=FAST_RETRY)


def test_environment_credentials_authenticate(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client_environment(monkeypatch, tmp_path, emulator, kaggle_json=False)
    monkeypatch.setenv("KAGGLE_USERNAME", emulator.user)
    monkeypatch.setenv("KAGGLE_KEY", emulator.key)

    kaggle = KaggleBackend(retry=FAST_RETRY)

    assert kaggle.dataset_exists(f"{emulator.user}/never-published") is False


def test_owner_defaults_to_user(backend: KaggleBackend, emulator: Emulator) -> None:
    assert backend.owner == emulator.user


# Endpoint -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["127.0.0.1:45599", "localhost:8089", "ftp://127.0.0.1:8089", "http://", "http://127.0.0.1:99999"])
def test_endpoint_invalid_rejected(kaggle_env: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KDARTS_KAGGLE_ENDPOINT", value)

    with pytest.raises(BackendError) as caught:
        KaggleBackend(retry=FAST_RETRY)

    assert f"invalid KDARTS_KAGGLE_ENDPOINT={value!r}" in str(caught.value)
    assert "http:// or https://" in str(caught.value)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"KDARTS_KAGGLE_ENDPOINT": "HTTP://127.0.0.1:8089/"}, "http://127.0.0.1:8089"),
        ({"KAGGLE_API_ENVIRONMENT": "LOCALHOST"}, "http://localhost"),
        ({}, "https://api.kaggle.com"),
    ],
    ids=["variable", "localhost", "kaggle"],
)
def test_endpoint_url_matches_client(kaggle_env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str) -> None:
    monkeypatch.delenv("KDARTS_KAGGLE_ENDPOINT")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    # kaggle.json credentials need no call, so no request leaves this machine.
    kaggle = KaggleBackend(retry=FAST_RETRY)

    with kaggle.api.build_kaggle_client() as client:
        request_url = client.http_client()._get_request_url("datasets.DatasetApiService", "GetDatasetStatus")

    assert endpoint_url() == expected
    assert kaggle.endpoint_url == expected
    assert request_url.startswith(f"{expected}/")


# Status ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (KernelWorkerStatus.COMPLETE, "complete"),
        ("KernelWorkerStatus.COMPLETE", "complete"),
        ("complete", "complete"),
        ("ERROR", "error"),
        ("KERNEL_WORKER_STATUS_RUNNING", "running"),
        ("cancelAcknowledged", "cancelled"),
        ("CANCEL_REQUESTED", "running"),
        (KernelWorkerStatus.QUEUED, "queued"),
    ],
)
def test_kernel_state_spellings(value: object, state: str) -> None:
    assert kernel_state(value) == state


def test_kernel_state_unknown_raises() -> None:
    with pytest.raises(BackendError, match="unknown Kaggle kernel status"):
        kernel_state("EXPLODED")


def test_status_pinned_despite_stale(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    first = backend.push(tiny_bundle(tmp_path / "v1", backend.owner, "kaggle-test-stale", ["print('version one')"]))
    assert wait_terminal(backend, first.ref, first.version).state == "complete"
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    second = backend.push(tiny_bundle(tmp_path / "v2", backend.owner, "kaggle-test-stale", ["print('version two')"]))
    emulator.inject(kind="stale_status", target="GetKernelSessionStatus")

    unpinned = backend.api.kernels_status(first.ref)
    pinned = backend.status(second.ref, second.version)

    assert second.version == first.version + 1
    assert kernel_state(unpinned.status) == "complete"
    assert pinned.state == "queued"
    assert emulator.requests("GetKernelSessionStatus")[-1]["version_label"] == f"v{second.version}"


def test_push_while_running_starts_new_version(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    first = backend.push(tiny_bundle(tmp_path / "v1", backend.owner, "kaggle-test-running", ["import time\ntime.sleep(120)"]))
    deadline = time.monotonic() + 60
    while backend.status(first.ref, first.version).state != "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)

    second = backend.push(tiny_bundle(tmp_path / "v2", backend.owner, "kaggle-test-running", ["print('next')"]))
    running = backend.status(first.ref, first.version)

    assert second.version == first.version + 1
    assert running.state == "running"
    # Kaggle's session status carries no progress, so none is made up.
    assert running.cells_total is None
    assert backend.status(second.ref, second.version).state == "queued"


def test_error_status_shows_failing_cell(backend: KaggleBackend, failed_kernel: tuple[str, int, Path]) -> None:
    ref, version, _ = failed_kernel

    status = backend.status(ref, version)

    assert status.state == "error"
    assert status.failing_cell == FAILING_CELL_INDEX
    assert status.error_name == "ValueError"
    assert status.error_value == "boom from the third code cell"
    assert f"cell {FAILING_CELL_INDEX} raised ValueError" in status.describe()


def test_find_failure_reads_papermill_log() -> None:
    log = 'noise\nPapermillExecutionError: \n-----\nException encountered at "In [7]":\n\x1b[31mKeyError\x1b[0m: \'x\'\n'

    assert find_failure(log) == (7, "KeyError", "'x'")


# Push -----------------------------------------------------------------------------------------------


def test_push_invalid_dataset_source_fails(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-invalid", ["print(1)"], dataset_sources=["nobody/missing-dataset"])

    with pytest.raises(KaggleApiError) as caught:
        backend.push(bundle)

    assert "dataset sources nobody/missing-dataset" in str(caught.value)
    assert "version 1" in str(caught.value)


def test_push_prefixed_source_fails(backend: KaggleBackend, emulator: Emulator, tmp_path: Path, failed_kernel: tuple[str, int, Path]) -> None:
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    source = f"datasets/{backend.owner}/{NESTED_SLUG}"
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-prefixed", ["print(1)"], dataset_sources=[source])

    with pytest.raises(KaggleApiError, match=f"dataset sources {source}"):
        backend.push(bundle)


def test_push_title_slug_mismatch_follows_url(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-slug", ["print(1)"], title="Another Kernel Title")

    pushed = backend.push(bundle)

    assert pushed.ref == f"{backend.owner}/another-kernel-title"
    assert backend.status(pushed.ref, pushed.version).state == "queued"


def test_push_large_source_rejected_once(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-large", ["x = '" + "a" * 1_000_000 + "'"])
    # A bundle that misstates its size gets past the backend's own check, so the server decides.
    small_claim = type(bundle)(folder=bundle.folder, notebook=bundle.notebook, metadata=bundle.metadata, size=10)

    with pytest.raises(KaggleApiError) as caught:
        backend.push(small_claim)

    assert caught.value.status == 400
    assert "The kernel source must be less than 1 megabytes in size." in str(caught.value)
    assert len(emulator.requests("SaveKernel")) == 1


def test_push_lost_response_adopts_version(backend: KaggleBackend, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.inject(kind="queue", target="SaveKernel", seconds=600)
    bundle = tiny_bundle(tmp_path, backend.owner, "kaggle-test-lost", ["print(1)"])
    real_push = backend.api.kernels_push

    def push_then_drop(*args, **kwargs):
        real_push(*args, **kwargs)
        raise requests.ConnectionError("connection dropped after the request was sent")

    monkeypatch.setattr(backend.api, "kernels_push", push_then_drop)

    pushed = backend.push(bundle)

    assert pushed.version == 1
    assert len(emulator.requests("SaveKernel")) == 1


# Retries --------------------------------------------------------------------------------------------


def test_rate_limit_honours_retry_after(backend: KaggleBackend, emulator: Emulator) -> None:
    emulator.inject(kind="rate_limit", target="GetDatasetStatus", retry_after=1)
    started = time.monotonic()

    exists = backend.dataset_exists(f"{backend.owner}/never-published")

    assert exists is False
    assert time.monotonic() - started >= 1.0
    assert [item["status"] for item in emulator.requests("GetDatasetStatus")] == [429, 404]


def test_server_error_retried(backend: KaggleBackend, emulator: Emulator) -> None:
    emulator.inject(kind="server_error", target="GetKernel", times=2)

    assert backend.latest_version(f"{backend.owner}/never-pushed-kernel") is None
    assert [item["status"] for item in emulator.requests("GetKernel")] == [500, 500, 403]


def test_dropped_connection_retried(backend: KaggleBackend, emulator: Emulator) -> None:
    emulator.inject(kind="drop", target="GetDatasetStatus")

    assert backend.dataset_exists(f"{backend.owner}/never-published") is False
    assert [item["fault"] for item in emulator.requests("GetDatasetStatus")] == ["drop", None]


def test_retries_exhausted_fail_loudly(backend: KaggleBackend, emulator: Emulator) -> None:
    emulator.inject(kind="server_error", target="GetDatasetStatus", times=10, status=503)

    with pytest.raises(KaggleApiError) as caught:
        backend.dataset_exists(f"{backend.owner}/never-published")

    assert caught.value.status == 503
    assert len(emulator.requests("GetDatasetStatus")) == FAST_RETRY.attempts


def test_not_found_not_retried(backend: KaggleBackend, emulator: Emulator) -> None:
    assert backend.latest_dataset_version(f"{backend.owner}/never-published") is None
    assert len(emulator.requests("GetDataset")) == 1


def test_retry_after_http_date() -> None:
    moment = email.utils.formatdate(time.time() + 30, usegmt=True)

    assert 25 <= parse_retry_after(moment) <= 31


def test_backoff_stays_within_jitter() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.5)

    delays = [policy.backoff(3) for _ in range(200)]

    assert min(delays) >= 2.0
    assert max(delays) <= 6.0
    assert len({round(delay, 6) for delay in delays}) > 1


def test_client_error_not_retriable() -> None:
    response = requests.Response()
    response.status_code = 403

    assert classify(requests.HTTPError("forbidden", response=response)).retriable is False


# Datasets -------------------------------------------------------------------------------------------


def test_dataset_round_trip_nested(backend: KaggleBackend, emulator: Emulator, failed_kernel: tuple[str, int, Path], tmp_path: Path) -> None:
    ref, version, source = failed_kernel
    backend.download_output(ref, version, tmp_path / "out")
    expected = sorted(f"{name} {hashlib.sha256(data).hexdigest()}" for name, data in files_under(source).items())

    seen = (tmp_path / "out" / "input-listing.txt").read_text().splitlines()

    assert seen == expected


def test_dataset_version_holds_only_its_files(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    ref = f"{backend.owner}/kaggle-test-versions"
    first = write_nested(tmp_path / "first")
    second = tmp_path / "second"
    (second / "other").mkdir(parents=True)
    (second / "other" / "new.txt").write_text("only in version two\n")

    one = backend.publish_dataset(ref, first, title="Versioned test data")
    two = backend.publish_dataset(ref, second, title="Versioned test data")

    stored = emulator.root / "local" / "datasets" / backend.owner / "kaggle-test-versions"
    assert (one.version, two.version) == (1, 2)
    assert files_under(stored / "v1") == files_under(first)
    assert files_under(stored / "v2") == files_under(second)


def test_dataset_waits_until_ready(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    emulator.inject(kind="slow_processing", target="CreateDataset", seconds=1.5)
    folder = write_nested(tmp_path / "data")
    started = time.monotonic()

    published = backend.publish_dataset(f"{backend.owner}/kaggle-test-slow", folder, title="Slow test data")

    assert published.status == "ready"
    assert time.monotonic() - started >= 1.5
    assert backend.dataset_status(published.ref) == "ready"


@pytest.mark.parametrize(
    ("slug", "title", "problem"),
    [("short", "A good title", "slug"), ("kaggle-test-title", "Tiny", "title"), ("Bad_Slug_Name", "A good title", "slug")],
)
def test_dataset_precheck_rejects_before_upload(backend: KaggleBackend, emulator: Emulator, tmp_path: Path, slug: str, title: str, problem: str) -> None:
    folder = write_nested(tmp_path / "data")

    with pytest.raises(BackendError, match=f"invalid dataset {problem}"):
        backend.publish_dataset(f"{backend.owner}/{slug}", folder, title=title)

    assert emulator.requests() == []


def test_dataset_upload_resumes_after_failure(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    payload = os.urandom(300_000)
    (folder / "blob.bin").write_bytes(payload)
    emulator.inject(kind="server_error", target="upload", after_bytes=100_000)

    published = backend.publish_dataset(f"{backend.owner}/kaggle-test-resume", folder, title="Resumed upload")

    uploads = emulator.requests("upload")
    stored = emulator.root / "local" / "datasets" / backend.owner / "kaggle-test-resume" / f"v{published.version}" / "blob.bin"
    assert [item["status"] for item in uploads] == [500, 308, 200]
    assert uploads[1]["content_range"] == "bytes */300000"
    assert uploads[2]["content_range"] == "bytes 100000-299999/300000"
    assert stored.read_bytes() == payload


def test_dataset_upload_drop_retried(backend: KaggleBackend, emulator: Emulator, tmp_path: Path) -> None:
    folder = write_nested(tmp_path / "data")
    emulator.inject(kind="drop", target="upload", after_bytes=10)

    published = backend.publish_dataset(f"{backend.owner}/kaggle-test-dropped", folder, title="Dropped upload")

    assert published.version == 1
    assert emulator.requests("upload")[0]["fault"] == "drop"


# Output ---------------------------------------------------------------------------------------------


def test_output_paging_over_500_files(backend: KaggleBackend, emulator: Emulator, failed_kernel: tuple[str, int, Path], tmp_path: Path) -> None:
    ref, version, _ = failed_kernel

    backend.download_output(ref, version, tmp_path / "out")

    many = list((tmp_path / "out" / "many").rglob("*.txt"))
    pages = emulator.requests("ListKernelSessionOutput")
    assert len(many) == 520
    assert len(pages) == 6
    assert (tmp_path / "out" / "many" / "part-08" / "file-0515.txt").read_text() == "file 515\n"


def test_output_log_written(backend: KaggleBackend, failed_kernel: tuple[str, int, Path], tmp_path: Path) -> None:
    ref, version, _ = failed_kernel

    backend.download_output(ref, version, tmp_path / "out")

    log = (tmp_path / "out" / "log.txt").read_text()
    assert "manifest entries: 522" in log
    assert 'Exception encountered at "In [3]"' in log


def test_pull_shortfall_fails_loudly(backend: KaggleBackend, failed_kernel: tuple[str, int, Path], tmp_path: Path) -> None:
    ref, version, _ = failed_kernel
    record = PushRecord(kernel="failing", backend="kaggle", ref=ref, version=version, pushed_at=time.time())

    with pytest.raises(BackendError, match="ghost.txt is missing"):
        pull_kernel(backend, record, tmp_path / "out")


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/escape.txt", "many/../../escape.txt", "C:/escape.txt"])
def test_output_unsafe_entry_rejected(backend: KaggleBackend, emulator: Emulator, failed_kernel: tuple[str, int, Path], tmp_path: Path, name: str) -> None:
    ref, version, _ = failed_kernel
    emulator.inject(kind="extra_output", target="ListKernelSessionOutput", file_name=name, content="escaped")
    target = tmp_path / "inside" / "out"

    with pytest.raises(BackendError, match="outside"):
        backend.download_output(ref, version, target)

    assert not (tmp_path / "inside" / "escape.txt").exists()
    assert not target.exists()


def test_output_path_accepts_nested_name(tmp_path: Path) -> None:
    assert output_path(tmp_path, "a/b/c.txt") == tmp_path / "a" / "b" / "c.txt"


def test_output_download_drop_retried(backend: KaggleBackend, emulator: Emulator, failed_kernel: tuple[str, int, Path], tmp_path: Path) -> None:
    ref, version, _ = failed_kernel
    emulator.inject(kind="drop", target="download", times=2)

    backend.download_output(ref, version, tmp_path / "out")

    downloads = emulator.requests("download")
    assert [item["fault"] for item in downloads[:3]] == ["drop", "drop", None]
    assert len(list((tmp_path / "out" / "many").rglob("*.txt"))) == 520
