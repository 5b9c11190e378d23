"""`kdarts search` through typer's CliRunner: primitives, reports, plots and errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdarts.cli import app
from kdarts.errors import KdartsError
from kdarts.plan import load_plan

pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = [
    "--data", "sample", "--epochs", "1", "--layers", "3", "--init-channels", "4", "--nodes", "2",
    "--batch-size", "16", "--max-train-images", "64", "--seed", "1", "--device", "cpu",
]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_search_subset_of_primitives(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--primitives", "sep_conv_3x3, max_pool_3x3"])

    assert result.exit_code == 0, result.output
    plan = load_plan(tmp_path / "plan.json")
    assert plan.primitives == ["sep_conv_3x3", "max_pool_3x3"]
    operations = {edge.operation for edge in plan.normal.edges + plan.reduce.edges}
    assert operations <= {"sep_conv_3x3", "max_pool_3x3"}
    assert len(json.loads((tmp_path / "alphas.json").read_text())["normal"][0]) == 2


def test_search_writes_report_and_plots(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path)])

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert sum(report["normal"]["operation_counts"].values()) == 4
    assert report["max_skip_connections"] == 2
    assert "normal cell: 2 nodes" in report["text"]
    for name in ("curves.png", "cells.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE), f"{name} is no PNG"


def test_search_warns_on_skip_collapse(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # With skip_connect as the only operation, all four normal-cell edges are skip connections.
    arguments = ["search", *TINY, "--out", str(tmp_path), "--primitives", "none,skip_connect", "--max-skip", "1"]

    with caplog.at_level(logging.WARNING, logger="kdarts.search.trainer"):
        result = runner.invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "collapsed into skip connections: 4 of 4 edges are skip_connect (max 1)" in result.output
    status = json.loads((tmp_path / "status.json").read_text())
    assert any("collapsed into skip connections" in warning for warning in status["warnings"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["normal"]["skip_connections"] == 4
    assert "collapsed into skip connections" in caplog.text


def test_search_max_skip_allows_skips(tmp_path: Path) -> None:
    arguments = ["search", *TINY, "--out", str(tmp_path), "--primitives", "skip_connect,avg_pool_3x3", "--max-skip", "4"]

    result = runner.invoke(app, arguments)

    assert result.exit_code == 0, result.output
    status = json.loads((tmp_path / "status.json").read_text())
    assert not any("collapsed into skip connections" in warning for warning in status["warnings"])


def test_search_rerun_of_complete_folder(tmp_path: Path) -> None:
    runner.invoke(app, ["search", *TINY, "--out", str(tmp_path)])
    plan_bytes = (tmp_path / "plan.json").read_bytes()

    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "complete: plan written to" in result.output
    assert (tmp_path / "plan.json").read_bytes() == plan_bytes


def test_search_step_limit_then_resume(tmp_path: Path) -> None:
    first = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--max-steps-per-session", "1"])
    second = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path)])

    assert "incomplete (step limit) after 0 epochs" in first.output
    assert "complete: plan written to" in second.output


def test_search_unknown_primitive_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--primitives", "sep_conv_3x3,conv_9x9"])

    assert isinstance(result.exception, KdartsError)
    assert "conv_9x9" in str(result.exception)


def test_search_invalid_precision_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--precision", "fp8"])

    assert isinstance(result.exception, KdartsError)
    assert "invalid --precision 'fp8'" in str(result.exception)


def test_search_negative_max_skip_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--max-skip", "-1"])

    assert result.exit_code == 2
    assert not (tmp_path / "status.json").exists()


def test_search_bf16_on_cpu_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", *TINY, "--out", str(tmp_path), "--precision", "bf16"])

    assert isinstance(result.exception, KdartsError)
    assert "--precision bf16 is not supported on the CPU" in str(result.exception)
