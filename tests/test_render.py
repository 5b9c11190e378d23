"""Rendering: every built-in kernel for each target, the embedded wheel, bundles, assets and limits."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import nbformat
import pytest

from kdarts.errors import RenderError
from kdarts.kernel.render import KAGGLE_SOURCE_LIMIT, METADATA_FILE, render_notebook, write_assets, write_bundle
from kdarts.kernel.specs import list_specs, load_spec
from kdarts.kernel.wheel import build_engine_wheel

TARGETS = ("kaggle", "colab")
BUILTIN = sorted(list_specs(Path("/nonexistent")))


@pytest.fixture(scope="module")
def wheel():
    return build_engine_wheel()


def wheel_from_notebook(notebook) -> tuple[bytes, str]:
    source = next(cell.source for cell in notebook.cells if "WHEEL_BASE64" in cell.source)
    block = source.split("WHEEL_BASE64 = (", 1)[1].split(")", 1)[0]
    data = base64.b64decode("".join(re.findall(r'"([A-Za-z0-9+/=]+)"', block)))
    sha = re.search(r'WHEEL_SHA256 = "([0-9a-f]{64})"', source).group(1)
    return data, sha


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_kernel_renders_valid_bundle(tmp_path, wheel, name, target):
    spec = load_spec(name, platform=target)
    bundle = write_bundle(spec, tmp_path, owner="alice", target=target, wheel=wheel)
    notebook = nbformat.read(bundle.notebook, as_version=4)
    nbformat.validate(notebook)
    ids = [cell.id for cell in notebook.cells]
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert (notebook.nbformat, notebook.nbformat_minor) == (4, 5)
    assert len(ids) == len(set(ids))
    assert all(cell.outputs == [] for cell in code)
    assert all(cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert bundle.size < KAGGLE_SOURCE_LIMIT // 4


@pytest.mark.parametrize("target", TARGETS)
def test_every_code_cell_follows_markdown(wheel, target):
    notebook = render_notebook(load_spec("search", platform=target), target=target, wheel=wheel)
    for previous, cell in zip(notebook.cells, notebook.cells[1:]):
        if cell.cell_type == "code":
            assert previous.cell_type == "markdown", cell.source[:60]


def test_kaggle_bundle_has_metadata(tmp_path, wheel):
    bundle = write_bundle(load_spec("search", platform="kaggle"), tmp_path, owner="alice", target="kaggle", wheel=wheel)
    metadata = json.loads((bundle.folder / METADATA_FILE).read_text())
    assert sorted(path.name for path in bundle.folder.iterdir()) == ["kdarts-search.ipynb", METADATA_FILE]
    assert metadata["id"] == "alice/kdarts-search"
    assert metadata["machine_shape"] == "NvidiaTeslaT4"
    assert metadata["enable_internet"] is False
    assert metadata["is_private"] is True
    assert metadata["dataset_sources"] == ["alice/kdarts-cifar10"]


def test_colab_bundle_is_notebook_only(tmp_path, wheel):
    bundle = write_bundle(load_spec("search", platform="colab"), tmp_path, owner="drive", target="colab", wheel=wheel)
    assert [path.name for path in bundle.folder.iterdir()] == ["kdarts-search.ipynb"]


def test_colab_notebook_mounts_drive_and_writes_there(wheel):
    notebook = render_notebook(load_spec("search", platform="colab"), target="colab", wheel=wheel)
    text = "\n".join(cell.source for cell in notebook.cells)
    assert "mount_drive()" in text
    assert "colab_run_folder(" in text
    assert "PARAMETERS[\"drive_folder\"]" in text


def test_kaggle_notebook_has_no_drive_code(wheel):
    notebook = render_notebook(load_spec("search", platform="kaggle"), target="kaggle", wheel=wheel)
    assert "mount_drive" not in "\n".join(cell.source for cell in notebook.cells)


@pytest.mark.parametrize("target", TARGETS)
def test_embedded_wheel_matches_its_sha256(wheel, target):
    notebook = render_notebook(load_spec("search"), target=target, wheel=wheel)
    data, sha = wheel_from_notebook(notebook)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert hashlib.sha256(data).hexdigest() == sha
    assert "kdarts/search/trainer.py" in names
    assert not [name for name in names if name.startswith(("kdarts/kernel/", "kdarts/datasets/"))]


def test_render_is_byte_identical_twice(tmp_path):
    spec = load_spec("search")
    first = write_bundle(spec, tmp_path / "a", owner="alice").notebook.read_bytes()
    second = write_bundle(spec, tmp_path / "b", owner="alice").notebook.read_bytes()
    assert first == second


def test_parameters_cell_is_tagged(wheel):
    notebook = render_notebook(load_spec("search", overrides=["epochs=2"]), wheel=wheel)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "'epochs': 2" in tagged[0].source


def test_notebook_holds_no_credentials(tmp_path, monkeypatch, wheel):
    secrets = {"KAGGLE_KEY": "kaggle-secret-7f3a", "KAGGLE_API_TOKEN": "token-secret-91bc", "KAGGLE_USERNAME": "user-secret-55"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    credentials = tmp_path / "drive.json"
    credentials.write_text(json.dumps({"type": "authorized_user", "refresh_token": "refresh-secret-e21d"}))
    monkeypatch.setenv("KDARTS_DRIVE_CREDENTIALS", str(credentials))
    for target in TARGETS:
        bundle = write_bundle(load_spec("search"), tmp_path / target, owner="alice", target=target, wheel=wheel)
        text = "".join(path.read_text() for path in bundle.folder.iterdir())
        for secret in [*secrets.values(), "refresh-secret-e21d", str(credentials)]:
            assert secret not in text


def test_kaggle_client_accepts_bundle(tmp_path, monkeypatch, capsys, wheel):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    from kaggle.api.kaggle_api_extended import KaggleApi

    captured = []

    class FakeKernelsClient:
        def save_kernel(self, request):
            captured.append(request)
            return None

    class FakeClient:
        kernels = type("Kernels", (), {"kernels_api_client": FakeKernelsClient()})()

    api = KaggleApi()
    monkeypatch.setattr(api, "build_kaggle_client", lambda: contextlib.nullcontext(FakeClient()))
    spec = load_spec("search", platform="kaggle")
    bundle = write_bundle(spec, tmp_path, owner="alice", target="kaggle", wheel=wheel)

    api.kernels_push(str(bundle.folder), timeout=str(int(spec.kernel.session_limit)))
    request = captured[0]
    assert request.slug == "alice/kdarts-search"
    assert request.machine_shape == "NvidiaTeslaT4"
    assert request.enable_internet is False
    assert request.is_private is True
    assert request.dataset_data_sources == ["alice/kdarts-cifar10"]
    assert request.session_timeout_seconds == 43200
    assert json.loads(request.text)["metadata"]["kernelspec"]["name"] == "python3"
    assert "does not resolve" not in capsys.readouterr().out


def write_tiny_kernel(folder: Path, body: str, kernel_extra: str = "") -> None:
    (folder / "kernels").mkdir(exist_ok=True)
    (folder / "templates").mkdir(exist_ok=True)
    (folder / "kernels" / "tiny.toml").write_text(
        f'[kernel]\ntemplate = "tiny.ipynb.j2"\nslug = "tiny-kernel"\ntitle = "tiny kernel"\n{kernel_extra}\n[params]\nsize = 1\n'
    )
    (folder / "templates" / "tiny.ipynb.j2").write_text(body)


def test_oversized_kaggle_notebook_is_rejected(tmp_path, monkeypatch, wheel):
    monkeypatch.chdir(tmp_path)
    write_tiny_kernel(tmp_path, '#%% markdown\nBig.\n#%% code\nDATA = "' + "x" * KAGGLE_SOURCE_LIMIT + '"\n')
    with pytest.raises(RenderError, match="1,000,000 bytes or more; move large files into an attached dataset"):
        write_bundle(load_spec("tiny"), tmp_path / "out", owner="alice", wheel=wheel)


def test_text_before_first_marker_is_error(tmp_path, monkeypatch, wheel):
    monkeypatch.chdir(tmp_path)
    write_tiny_kernel(tmp_path, "stray text\n#%% code\nx = 1\n")
    with pytest.raises(RenderError, match="text before the first"):
        render_notebook(load_spec("tiny"), wheel=wheel)


def test_missing_template_is_render_error(tmp_path, monkeypatch, wheel):
    monkeypatch.chdir(tmp_path)
    write_tiny_kernel(tmp_path, "")
    (tmp_path / "templates" / "tiny.ipynb.j2").unlink()
    with pytest.raises(RenderError, match="template 'tiny.ipynb.j2' not found"):
        render_notebook(load_spec("tiny"), wheel=wheel)


def test_assets_move_engine_out_of_notebook(tmp_path, monkeypatch, wheel):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "search.toml").write_text(load_spec("search").path.read_text())
    (tmp_path / "kernels" / "table.csv").write_text("a,b\n1,2\n")
    spec = load_spec("search", overrides=["kernel.embed_engine=false", 'kernel.assets=["table.csv"]'], cwd=tmp_path)
    bundle = write_bundle(spec, tmp_path / "out", owner="alice", wheel=wheel)
    published = write_assets(spec, wheel, tmp_path / "assets")
    text = bundle.notebook.read_text()
    assert "WHEEL_BASE64" not in text
    assert bundle.size < 20_000
    assert sorted(path.name for path in (tmp_path / "assets").iterdir()) == sorted(["table.csv", wheel.filename])
    assert [asset.name for asset in published if asset.sha256 in text] == ["table.csv", wheel.filename]
    assert bundle.metadata["dataset_sources"][-1] == "alice/kdarts-search-assets"


def test_missing_asset_names_spec_and_entry(tmp_path, monkeypatch, wheel):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernels").mkdir()
    spec = load_spec("search", overrides=['kernel.assets=["missing.bin"]'], cwd=tmp_path)
    with pytest.raises(Exception, match="kernel.assets entry 'missing.bin' is not a file"):
        render_notebook(spec, wheel=wheel)
