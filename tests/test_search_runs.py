"""A real DARTS search on the bundled CIFAR-10 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdarts.plan import DARTS_PRIMITIVES, load_plan
from kdarts.search.config import SearchConfig
from kdarts.search.trainer import SearchOptions, run_search

pytestmark = pytest.mark.slow

TINY = dict(layers=3, init_channels=4, nodes=2, batch_size=32, max_train_images=256, seed=0)


def test_search_lowers_training_loss(tmp_path: Path, sample_dataset, torch_threads) -> None:
    # Batches of 16 give 8 steps per epoch: 40 steps lower the loss by about 7%.
    config = SearchConfig(epochs=5, **{**TINY, "batch_size": 16})

    result = run_search(config, SearchOptions(output=tmp_path / "out", device="cpu"), dataset=sample_dataset)

    assert result.complete
    losses = [record["train_loss"] for record in result.metrics]
    assert len(losses) == 5
    assert losses[-1] < losses[0] * 0.95, f"training loss did not fall: {losses}"


def test_search_writes_valid_plan_and_status(tmp_path: Path, sample_dataset, torch_threads) -> None:
    output = tmp_path / "out"
    config = SearchConfig(epochs=1, **TINY)

    run_search(config, SearchOptions(output=output, device="cpu"), dataset=sample_dataset)

    plan = load_plan(output / "plan.json")
    assert plan.primitives == list(DARTS_PRIMITIVES)
    assert len(plan.normal.edges) == 2 * TINY["nodes"]
    assert all(edge.operation != "none" for edge in plan.normal.edges + plan.reduce.edges)
    status = json.loads((output / "status.json").read_text())
    assert status["state"] == "complete"
    assert status["epochs_done"] == 1
    metrics = (output / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1
    alphas = json.loads((output / "alphas.json").read_text())
    assert len(alphas["normal"]) == 5  # 2 + 3 edges for two intermediate nodes


def test_search_rerun_of_complete_output_does_nothing(tmp_path: Path, sample_dataset, torch_threads) -> None:
    output = tmp_path / "out"
    config = SearchConfig(epochs=1, **TINY)
    run_search(config, SearchOptions(output=output, device="cpu"), dataset=sample_dataset)
    plan_bytes = (output / "plan.json").read_bytes()

    result = run_search(config, SearchOptions(output=output, device="cpu"), dataset=sample_dataset)

    assert result.complete
    assert (output / "plan.json").read_bytes() == plan_bytes
