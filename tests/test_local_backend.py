"""The local backend: real notebook executions with nbclient in Kaggle-like run folders.

Each test writes a tiny spec and template into a `kernels/` and `templates/` folder in its own
working directory, which shadow the built-in ones, and pushes it through the real backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from kdarts.errors import BackendError
from kdarts.kernel.backends.local import LocalBackend
from kdarts.kernel.backends.local_worker import create_kernel_environment
from kdarts.kernel.jobs import latest_push, pull_kernel, push_kernel, wait_for_kernel
from kdarts.kernel.specs import load_spec

DATASET = "tiny-data"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with kernels/ and templates/ folders and a published tiny dataset."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernels").mkdir()
    (tmp_path / "templates").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3\n")
    LocalBackend().publish_dataset(f"local/{DATASET}", data, title="tiny data")
    return tmp_path


def write_kernel(folder: Path, slug: str, body: str, kernel_extra: str = "", params: str = "size = 1") -> str:
    """Write kernels/<slug>.toml and templates/<slug>.ipynb.j2 and return the kernel name."""
    (folder / "kernels" / f"{slug}.toml").write_text(
        f'[kernel]\ntemplate = "{slug}.ipynb.j2"\nslug = "{slug}"\ntitle = "{slug.replace("-", " ")}"\n'
        f'dataset = "{DATASET}"\nsession_limit = "2m"\n{kernel_extra}\n\n[params]\n{params}\n'
    )
    (folder / "templates" / f"{slug}.ipynb.j2").write_text(body)
    return slug


def run_kernel(name: str, backend: LocalBackend | None = None, overrides: list[str] | None = None, timeout: float = 90):
    backend = backend or LocalBackend()
    record = push_kernel(load_spec(name, overrides=overrides), backend)
    status = wait_for_kernel(backend, record.ref, record.version, timeout=timeout, poll_seconds=0.3)
    return backend, record, status


@pytest.mark.slow
def test_cell_error_names_cell_class_message(workspace):
    name = write_kernel(
        workspace,
        "raises-kernel",
        "#%% markdown\nFirst.\n#%% code\nprint('before the error')\n#%% markdown\nThen.\n"
        "#%% code\nraise ValueError('boom 42')\n#%% code\nprint('never printed')\n",
    )
    backend, record, status = run_kernel(name)
    executed = nbformat.read(backend.version_folder(record.ref, record.version) / "executed.ipynb", as_version=4)
    target = pull_kernel(backend, record)
    assert status.state == "error"
    assert status.failing_cell == 3
    assert status.error_name == "ValueError"
    assert status.error_value == "boom 42"
    assert executed.cells[1].outputs[0]["text"] == "before the error\n"
    assert executed.cells[4].outputs == []
    assert "before the error" in (target / "log.txt").read_text()
    assert "ValueError" in (target / "log.txt").read_text()
    assert (target / "raises-kernel.ipynb").is_file()


@pytest.mark.slow
def test_kernel_never_sees_credentials(workspace, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "secret-marker-1")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-marker-2")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "secret-marker-3")
    monkeypatch.setenv("KDARTS_VISIBLE_MARKER", "visible-marker")
    name = write_kernel(
        workspace,
        "environment-kernel",
        "#%% code\nimport os\nprint(sorted(value for value in os.environ.values() if 'marker' in value))\n",
    )

    backend, record, status = run_kernel(name)
    log = (backend.version_folder(record.ref, record.version) / "log.txt").read_text()

    assert status.state == "complete"
    assert "['visible-marker']" in log
    assert "secret-marker" not in log


@pytest.mark.slow
def test_cell_timeout_is_error(workspace):
    name = write_kernel(workspace, "sleepy-kernel", "#%% markdown\nSleep.\n#%% code\nimport time\ntime.sleep(120)\n")
    started = time.monotonic()
    _, _, status = run_kernel(name, LocalBackend(cell_timeout=2))
    assert status.state == "error"
    assert status.error_name == "CellTimeoutError"
    assert time.monotonic() - started < 45


def test_cell_timeout_from_environment(monkeypatch):
    monkeypatch.setenv("KDARTS_LOCAL_CELL_TIMEOUT", "2m")
    assert LocalBackend().cell_timeout == 120.0


def test_invalid_cell_timeout_variable_is_error(monkeypatch):
    monkeypatch.setenv("KDARTS_LOCAL_CELL_TIMEOUT", "soon")
    with pytest.raises(BackendError, match="KDARTS_LOCAL_CELL_TIMEOUT='soon' is invalid"):
        LocalBackend()


@pytest.mark.slow
def test_dead_kernel_is_error(workspace):
    name = write_kernel(workspace, "suicide-kernel", "#%% markdown\nDie.\n#%% code\nimport os\nos._exit(3)\n")
    started = time.monotonic()
    _, _, status = run_kernel(name)
    assert status.state == "error"
    assert status.error_name == "DeadKernelError"
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_session_limit_stops_kernel(workspace):
    name = write_kernel(
        workspace,
        "overtime-kernel",
        "#%% markdown\nWork.\n#%% code\nprint('working')\n#%% code\nimport time\ntime.sleep(120)\n",
        kernel_extra="",
    )
    started = time.monotonic()
    backend, record, status = run_kernel(name, overrides=["kernel.session_limit=6s"])
    raw = json.loads((backend.version_folder(record.ref, record.version) / "status.json").read_text())
    assert status.state == "error"
    assert status.error_name == "SessionLimitExceeded"
    assert status.failing_cell == 2
    assert raw["finished_at"] - raw["started_at"] < 20
    assert time.monotonic() - started < 45


@pytest.mark.slow
def test_push_returns_at_once_and_versions_grow(workspace):
    body = (
        "#%% markdown\nWrite an output and list the inputs.\n#%% code\nimport os\nfrom pathlib import Path\n"
        "Path('out.txt').write_text('made ' + open('../input/tiny-data/numbers.txt').read())\n"
        "print(sorted(os.listdir('../input')))\n"
    )
    name = write_kernel(workspace, "writer-kernel", body)
    backend = LocalBackend()
    started = time.monotonic()
    first = push_kernel(load_spec(name), backend)
    push_seconds = time.monotonic() - started
    early = backend.status(first.ref, first.version)
    wait_for_kernel(backend, first.ref, first.version, timeout=90, poll_seconds=0.3)
    second = push_kernel(load_spec(name), backend)
    final = wait_for_kernel(backend, second.ref, second.version, timeout=90, poll_seconds=0.3)
    target = pull_kernel(backend, latest_push(name))

    assert push_seconds < 10
    assert early.state in ("queued", "running")
    assert (first.version, second.version) == (1, 2)
    assert final.state == "complete"
    assert target == Path("runs") / name / "v2"
    assert (target / "out.txt").read_text() == "made 1 2 3\n"
    assert "['tiny-data']" in (target / "log.txt").read_text()


@pytest.mark.slow
def test_kernel_source_output_is_attached(workspace):
    writer = write_kernel(workspace, "writer-kernel", "#%% markdown\nWrite.\n#%% code\nopen('out.txt', 'w').write('from writer')\n")
    reader = write_kernel(
        workspace,
        "reader-kernel",
        "#%% markdown\nRead.\n#%% code\nprint(open('../input/writer-kernel/out.txt').read())\n",
        kernel_extra='kernel_sources = ["writer-kernel"]',
    )
    run_kernel(writer)
    backend, record, status = run_kernel(reader)
    assert status.state == "complete"
    assert "from writer" in backend.log_path(record.ref, record.version).read_text()


def test_push_without_complete_kernel_source_is_error(workspace):
    name = write_kernel(workspace, "reader-kernel", "#%% markdown\nRead.\n#%% code\nx = 1\n", kernel_extra='kernel_sources = ["absent-kernel"]')
    with pytest.raises(BackendError, match="kernel source local/absent-kernel has no complete version"):
        push_kernel(load_spec(name), LocalBackend())


def test_push_with_missing_dataset_names_publish_command(workspace):
    name = write_kernel(workspace, "lonely-kernel", "#%% markdown\nx\n#%% code\nx = 1\n")
    (workspace / "kernels" / "lonely-kernel.toml").write_text(
        (workspace / "kernels" / "lonely-kernel.toml").read_text().replace(DATASET, "absent-data")
    )
    with pytest.raises(BackendError, match="kdarts-kernel dataset publish PATH --slug absent-data --backend local"):
        push_kernel(load_spec(name), LocalBackend())


@pytest.mark.slow
def test_engine_installed_from_assets_dataset(workspace):
    (workspace / "kernels" / "notes.txt").write_text("asset text\n")
    body = (
        '{% import "_common.j2" as common %}\n#%% markdown\nAssets.\n'
        "{{ common.parameters(params) }}\n{{ common.install(wheel, embed_engine) }}\n"
        '{{ common.environment(target, params) }}\n{{ common.assets_cell(assets) }}\n'
        "#%% markdown\nRead.\n#%% code\nprint((assets_dir / 'notes.txt').read_text())\n"
    )
    name = write_kernel(workspace, "assets-kernel", body, kernel_extra='embed_engine = false\nassets = ["notes.txt"]')
    backend, record, status = run_kernel(name)
    log = backend.log_path(record.ref, record.version).read_text()
    assert status.state == "complete", log
    assert "asset text" in log
    assert "2 asset(s) verified" in log
    assert "kdarts before the install: not installed" in log


def test_dataset_versions_hold_only_their_files(tmp_path):
    backend = LocalBackend()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "a.txt").write_text("a")
    (second / "b.txt").write_text("b")
    backend.publish_dataset("local/some-data", first, title="some data")
    version = backend.publish_dataset("local/some-data", second, title="some data")
    assert version.version == 2
    assert backend.dataset_versions("local/some-data") == [1, 2]
    assert sorted(path.name for path in backend.dataset_path("local/some-data").iterdir()) == ["b.txt"]
    assert sorted(path.name for path in backend.dataset_path("local/some-data", 1).iterdir()) == ["a.txt"]


def test_published_dataset_is_read_only(tmp_path):
    backend = LocalBackend()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    backend.publish_dataset("local/some-data", tmp_path / "src", title="some data")
    assert (backend.dataset_path("local/some-data") / "a.txt").stat().st_mode & 0o222 == 0


def test_status_of_unknown_kernel_is_error(tmp_path):
    with pytest.raises(BackendError, match="never pushed"):
        LocalBackend().status("local/absent-kernel")


def test_kernel_environment_lacks_kdarts(tmp_path):
    python = create_kernel_environment(tmp_path / "python")
    result = subprocess.run([str(python), "-c", "import kdarts"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "No module named 'kdarts'" in result.stderr


def test_kernel_environment_sees_host_packages(tmp_path):
    python = create_kernel_environment(tmp_path / "python")
    result = subprocess.run([str(python), "-c", "import nbformat, ipykernel"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_search_bundle_runs_in_clean_environment(tmp_path):
    """Run `kdarts-kernel push search --wait` as a user would, with tiny settings."""
    from kdarts.plan import load_plan

    environment = {**os.environ, "KDARTS_HOME": str(tmp_path / "home" / ".kdarts")}
    settings = ["epochs=1", "layers=3", "init_channels=4", "nodes=2", "batch_size=16", "max_train_images=64"]
    command = [sys.executable, "-m", "kdarts.kernel.cli", "push", "search", "--wait"]
    for setting in settings:
        command += ["--set", setting]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    pulled = tmp_path / "runs" / "search" / "v1"
    plan = load_plan(pulled / "plan.json")
    run = Path(environment["KDARTS_HOME"]) / "local" / "kernels" / "local" / "kdarts-search" / "v1" / "run"
    located = subprocess.run(
        [str(run / "python" / "bin" / "python"), "-c", "import kdarts; print(kdarts.__file__)"],
        capture_output=True,
        text=True,
        cwd=run / "working",
    )
    installed = Path(located.stdout.strip()).parent
    log = (pulled / "log.txt").read_text()
    assert plan.nodes == 2
    assert "kdarts before the install: not installed" in log
    assert installed.is_relative_to(run / "python")
    assert (installed / "search" / "trainer.py").read_bytes() == (Path(__file__).parents[1] / "kdarts" / "search" / "trainer.py").read_bytes()
    assert not (installed / "kernel").exists()
    assert (pulled / "kdarts-search.ipynb").is_file()
    assert (pulled / "manifest.json").is_file()
