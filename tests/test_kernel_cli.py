"""The `kdarts-kernel` command line: output of each command and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdarts.kernel.backends.local import LocalBackend
from kdarts.kernel.cli import app


def kernel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `kdarts-kernel ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kdarts.kernel.cli", *args], cwd=cwd, capture_output=True, text=True, env=dict(os.environ), timeout=120
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith(("INFO ", "DEBUG "))]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["render", "search", "--set", "epoch=3"], "unknown parameter 'epoch'"),
        (["render", "search", "--target", "binder"], "invalid --target 'binder'; use kaggle or colab"),
        (["render", "no-such-kernel"], "no kernel spec named 'no-such-kernel'; known kernels:"),
        (["push", "search", "--backend", "nowhere"], "unknown backend 'nowhere'; available:"),
        (["status", "search"], "was never pushed from this folder; run: kdarts-kernel push search"),
        (["pull", "search"], "was never pushed from this folder; run: kdarts-kernel push search"),
        (["push", "search", "--backend", "colab", "--wait"], "set KDARTS_DRIVE_CREDENTIALS"),
        (["dataset", "publish", "missing-folder", "--slug", "some-data"], "missing-folder not found"),
        (["dataset", "publish", ".", "--slug", "Bad_Slug"], "invalid --slug"),
    ],
)
def test_error_is_one_line(tmp_path, args, expected):
    result = kernel_cli(*args, cwd=tmp_path)
    lines = error_lines(result)
    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_debug_shows_traceback(tmp_path):
    result = kernel_cli("--debug", "render", "search", "--set", "epoch=3", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "SpecError" in result.stderr


def test_colab_wait_is_rejected_before_upload(tmp_path, monkeypatch):
    monkeypatch.setenv("KDARTS_DRIVE_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setenv("KDARTS_DRIVE_FOLDER_ID", "folder")
    result = CliRunner().invoke(app, ["push", "search", "--backend", "colab", "--wait"])
    assert "--wait cannot follow a Colab run" in str(result.exception)


def test_render_reports_size_and_writes_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["render", "search", "-o", "out", "--owner", "alice"])
    metadata = json.loads((tmp_path / "out" / "kdarts-search" / "kernel-metadata.json").read_text())
    assert result.exit_code == 0, result.output
    assert "bytes of Kaggle's 1,000,000; profile kaggle)" in result.output
    assert metadata["id"] == "alice/kdarts-search"


def test_render_colab_target_uses_colab_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["render", "search", "--target", "colab", "-o", "out"])
    assert result.exit_code == 0, result.output
    assert "profile colab)" in result.output
    assert not (tmp_path / "out" / "kdarts-search" / "kernel-metadata.json").exists()


def test_list_shows_profiles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "search\tprofiles: colab, kaggle, local\t" in result.output


def test_dataset_publish_archive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "train" / "cat" / "1.png").write_bytes(b"png")
    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "images", arcname="images")
    result = CliRunner().invoke(app, ["dataset", "publish", "cifar.tar.gz", "--slug", "kdarts-cifar10"])
    stored = LocalBackend().dataset_path("local/kdarts-cifar10")
    assert result.exit_code == 0, result.output
    assert "published local/kdarts-cifar10 version 1 (ready) on the local backend" in result.output
    assert [path.name for path in stored.iterdir()] == ["cifar.tar.gz"]


def test_dataset_publish_folder_makes_versions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.txt").write_text("a")
    runner = CliRunner()
    runner.invoke(app, ["dataset", "publish", "images", "--slug", "some-data"])
    result = runner.invoke(app, ["dataset", "publish", "images", "--slug", "datasets/local/some-data"])
    assert result.exit_code == 0, result.output
    assert "published local/some-data version 2" in result.output


def test_kaggle_profile_push_needs_published_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["push", "search", "--profile", "kaggle"])
    assert "dataset local/kdarts-cifar10 not found on the local backend" in str(result.exception)
    assert "kdarts-kernel dataset publish PATH --slug kdarts-cifar10 --backend local" in str(result.exception)
