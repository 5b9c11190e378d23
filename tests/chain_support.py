"""The search that the chain tests carry across sessions, and its uninterrupted reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kdarts.plan import load_plan
from kdarts.search.checkpoint import list_checkpoints
from kdarts.search.config import SearchConfig
from kdarts.search.trainer import SearchOptions, run_search

# Eight steps in all (two epochs of four), at most three per session: the chain needs three
# sessions whatever the machine's speed, and the 60 s session limit still bounds each one.
SEARCH = dict(epochs=2, layers=3, init_channels=4, nodes=2, batch_size=16, max_train_images=128, seed=2)
OVERRIDES = [f"{key}={value}" for key, value in SEARCH.items()] + [
    "max_steps_per_session=3",
    "kernel.session_limit=60",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same search run in one go, in this process."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    output = tmp_path_factory.mktemp("reference")
    result = run_search(SearchConfig(data="sample", **SEARCH), SearchOptions(output=output, device="cpu"))
    assert result.complete
    return output


def assert_same_search(output: Path, reference: Path) -> None:
    """Check that a chained search ended with the reference's plan, alphas and weights, bit for bit."""
    plan = load_plan(output / "plan.json")
    expected = load_plan(reference / "plan.json")
    assert plan.normal == expected.normal
    assert plan.reduce == expected.reduce
    assert (output / "alphas.json").read_bytes() == (reference / "alphas.json").read_bytes()
    assert (output / "alphas-history.jsonl").read_bytes() == (reference / "alphas-history.jsonl").read_bytes()

    weights = torch.load(list_checkpoints(output / "checkpoints")[-1], weights_only=True)["network"]
    expected_weights = torch.load(list_checkpoints(reference / "checkpoints")[-1], weights_only=True)["network"]
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), f"weight {name} differs"
