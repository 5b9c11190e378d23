"""Checkpoints and exact resume: step limits, time budgets, SIGKILL, corrupt files, other settings."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kdarts.errors import CheckpointError, SearchError
from kdarts.plan import load_plan
from kdarts.search import trainer
from kdarts.search.checkpoint import KEEP, list_checkpoints, load_latest_checkpoint, save_checkpoint
from kdarts.search.config import SearchConfig
from kdarts.search.trainer import Search, SearchOptions, SearchResult, run_search

pytestmark = pytest.mark.slow

# Two epochs of four steps.
TINY = dict(epochs=2, layers=3, init_channels=4, nodes=2, batch_size=16, max_train_images=128, seed=3)
# Fields of metrics.jsonl that measure time, which no two runs share.
TIMING_FIELDS = ("seconds", "images_per_second")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run this module's searches on one thread: bit-identical results need a fixed thread count,
    and one thread is also the least disturbed by other processes on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sample_dataset, one_thread) -> Path:
    """The tiny search run in one go."""
    output = tmp_path_factory.mktemp("reference")
    result = run(output, sample_dataset)
    assert result.complete
    return output


def run(output: Path, dataset, config: dict[str, Any] | None = None, **options: Any) -> SearchResult:
    settings = SearchConfig(**(config or TINY))
    return run_search(settings, SearchOptions(output=output, device="cpu", plots=False, **options), dataset=dataset)


def run_until_complete(output: Path, dataset, **options: Any) -> list[SearchResult]:
    results = []
    for _ in range(20):
        results.append(run(output, dataset, **options))
        if results[-1].complete:
            return results
    raise AssertionError(f"search in {output} did not complete in 20 sessions")


def final_state(output: Path) -> dict[str, Any]:
    return torch.load(list_checkpoints(output / "checkpoints")[-1], weights_only=True)


def assert_same_search(output: Path, reference: Path) -> None:
    """Check that a search ended with the reference's plan, alphas, weights and optimizers, bit for bit."""
    plan, expected_plan = load_plan(output / "plan.json"), load_plan(reference / "plan.json")
    assert plan.normal == expected_plan.normal
    assert plan.reduce == expected_plan.reduce
    assert plan.provenance.alphas == expected_plan.provenance.alphas
    assert plan.provenance.val_accuracy == expected_plan.provenance.val_accuracy
    assert (output / "alphas.json").read_bytes() == (reference / "alphas.json").read_bytes()
    assert (output / "alphas-history.jsonl").read_bytes() == (reference / "alphas-history.jsonl").read_bytes()

    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    expected_metrics = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    for record in metrics + expected_metrics:
        for name in TIMING_FIELDS:
            record.pop(name)
    assert metrics == expected_metrics

    state, expected = final_state(output), final_state(reference)
    for part in ("network", "alphas"):
        assert state[part].keys() == expected[part].keys()
        for name, tensor in expected[part].items():
            assert torch.equal(state[part][name], tensor), f"{part} {name} differs"
    for optimizer in ("weight_optimizer", "arch_optimizer"):
        for index, values in expected[optimizer]["state"].items():
            for name, tensor in values.items():
                assert torch.equal(state[optimizer]["state"][index][name], tensor), f"{optimizer} {index} {name} differs"


def read_status(output: Path) -> dict[str, Any]:
    return json.loads((output / "status.json").read_text())


# Step limit and time budget ---------------------------------------------------------------------


def test_step_limit_resume_identical(tmp_path: Path, sample_dataset, reference: Path) -> None:
    results = run_until_complete(tmp_path, sample_dataset, max_steps_per_session=3)

    # Eight steps at three per session: stops after steps 3 (mid-epoch) and 6, done at 8.
    assert [result.complete for result in results] == [False, False, True]
    assert [result.reason for result in results] == ["step limit", "step limit", "finished"]
    assert_same_search(tmp_path, reference)


def test_step_limit_status_reports_progress(tmp_path: Path, sample_dataset, one_thread) -> None:
    run(tmp_path, sample_dataset, max_steps_per_session=3)

    status = read_status(tmp_path)
    assert status["state"] == "incomplete"
    assert status["reason"] == "step limit"
    assert (status["epochs_done"], status["step_in_epoch"], status["global_step"]) == (0, 3, 3)
    assert (status["steps_per_epoch"], status["total_steps"]) == (4, 8)
    assert (tmp_path / "checkpoints" / status["checkpoint"]).is_file()
    assert status["config"]["seed"] == TINY["seed"]


def test_time_budget_stop_and_resume(
    tmp_path: Path, sample_dataset, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each step takes at least 0.3 s, so eight steps need 2.4 s, but a 7.5 s budget less the
    # 5 s safety, the 1 s checkpoint estimate and 1.5 steps leaves about 1 s for steps.
    real_step = trainer.search_step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        output = real_step(*args, **kwargs)
        time.sleep(0.3)
        return output

    monkeypatch.setattr(trainer, "search_step", slow_step)
    budget = 7.5
    started = time.monotonic()

    first = run(tmp_path, sample_dataset, time_budget=budget)

    seconds = time.monotonic() - started
    assert not first.complete
    assert first.reason == "time budget"
    assert seconds < budget
    assert read_status(tmp_path)["reason"] == "time budget"
    monkeypatch.setattr(trainer, "search_step", real_step)
    run_until_complete(tmp_path, sample_dataset)
    assert_same_search(tmp_path, reference)


def test_time_budget_reserves_final_evaluation(tmp_path: Path, sample_dataset, one_thread) -> None:
    search = Search(SearchConfig(**TINY), SearchOptions(output=tmp_path, device="cpu"), dataset=sample_dataset)
    search.slowest_step_seconds = 1.0
    search.checkpoint_seconds = 0.5

    mid_epoch = search._seconds_needed()
    search.epoch, search.step_in_epoch = TINY["epochs"] - 1, search.steps_per_epoch - 1
    last_step = search._seconds_needed()

    assert mid_epoch == pytest.approx(1.5 + 0.5 + trainer.BUDGET_SAFETY_SECONDS)
    # The last step adds the epoch's checkpoint and 64 / 16 = 4 evaluation batches of 0.25 step each.
    assert last_step == pytest.approx(mid_epoch + 0.5 + 4 * 0.25 * 1.5)


def test_resume_from_other_folder(tmp_path: Path, sample_dataset, reference: Path) -> None:
    run(tmp_path / "first", sample_dataset, max_steps_per_session=5)

    result = run(tmp_path / "second", sample_dataset, resume=tmp_path / "first")

    assert result.complete
    assert_same_search(tmp_path / "second", reference)


def test_resume_with_other_settings_fails(tmp_path: Path, sample_dataset, one_thread) -> None:
    run(tmp_path, sample_dataset, max_steps_per_session=2)

    with pytest.raises(CheckpointError, match=r"seed: checkpoint 3, now 4"):
        run(tmp_path, sample_dataset, config={**TINY, "seed": 4})


def test_complete_output_is_left_alone(tmp_path: Path, sample_dataset, reference: Path) -> None:
    status_before = (reference / "status.json").read_bytes()

    result = run(reference, sample_dataset)

    assert result.complete
    assert (reference / "status.json").read_bytes() == status_before


def test_complete_output_with_other_settings_fails(tmp_path: Path, sample_dataset, reference: Path) -> None:
    with pytest.raises(SearchError, match=r"epochs: finished with 2, now 3"):
        run(reference, sample_dataset, config={**TINY, "epochs": 3})


def test_checkpoint_holds_full_state(reference: Path) -> None:
    state = final_state(reference)

    for key in ("network", "alphas", "weight_optimizer", "arch_optimizer", "scheduler", "epoch_order", "totals"):
        assert key in state, f"checkpoint lacks {key}"
    assert (state["epoch"], state["step_in_epoch"]) == (2, 0)
    assert set(state["rng"]) >= {"order", "augment", "torch", "python"}
    assert state["config"]["seed"] == TINY["seed"]


def test_diverged_search_stops_before_saving(
    tmp_path: Path, sample_dataset, one_thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A NaN weight after step 6 simulates a divergence, so step 7's loss is NaN.
    real_step = trainer.search_step
    steps = []

    def diverging_step(network, *args: Any, **kwargs: Any) -> Any:
        output = real_step(network, *args, **kwargs)
        steps.append(1)
        if len(steps) == 6:
            with torch.no_grad():
                network.classifier.weight.fill_(float("nan"))
        return output

    monkeypatch.setattr(trainer, "search_step", diverging_step)

    with pytest.raises(SearchError, match=r"diverged at epoch 2 step 3: the weight loss is nan"):
        run(tmp_path, sample_dataset)

    assert [path.name for path in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000004.pt"]
    assert torch.isfinite(final_state(tmp_path)["network"]["classifier.weight"]).all()
    assert read_status(tmp_path)["state"] == "incomplete"


# Corrupt checkpoints ----------------------------------------------------------------------------


def test_corrupt_newest_checkpoint_falls_back(
    tmp_path: Path, sample_dataset, reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(tmp_path, sample_dataset, max_steps_per_session=5)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step-00000005.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="kdarts.search.checkpoint"):
        result = run(tmp_path, sample_dataset)

    assert result.complete
    assert "step-00000005.pt is corrupt" in caplog.text
    assert "resuming from the older checkpoint step-00000004.pt" in caplog.text
    assert_same_search(tmp_path, reference)


def test_checkpoint_without_checksum_is_skipped(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"value": torch.tensor(1)})
    newest = save_checkpoint(tmp_path, 2, {"value": torch.tensor(2)})
    newest.with_name(newest.name + ".sha256").unlink()

    path, state = load_latest_checkpoint(tmp_path)

    assert path.name == "step-00000001.pt"
    assert state["value"].item() == 1


def test_all_checkpoints_corrupt_raise(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"value": torch.tensor(1)})
    path.write_bytes(path.read_bytes()[:-10])

    with pytest.raises(CheckpointError, match=r"no valid checkpoint .*step-00000001\.pt is corrupt"):
        load_latest_checkpoint(tmp_path)


def test_checkpoints_keep_newest(tmp_path: Path) -> None:
    for step in range(5):
        save_checkpoint(tmp_path, step, {"value": torch.tensor(step)})

    names = [path.name for path in list_checkpoints(tmp_path)]

    assert names == [f"step-{step:08d}.pt" for step in range(5 - KEEP, 5)]
    assert sorted(path.name for path in tmp_path.glob("*.sha256")) == [name + ".sha256" for name in names]


def test_empty_folder_has_no_checkpoint(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "missing") is None


# SIGKILL ----------------------------------------------------------------------------------------

# Two epochs of eight steps, logged after every step.
KILL_SETTINGS = [
    "--epochs", "2", "--layers", "3", "--init-channels", "4", "--nodes", "2", "--batch-size", "16",
    "--max-train-images", "256", "--seed", "5", "--device", "cpu", "--log-every-steps", "1",
]  # fmt: skip


def search_command(output: Path) -> list[str]:
    return [sys.executable, "-m", "kdarts", "search", "--data", "sample", "--out", str(output), *KILL_SETTINGS]


def one_thread_environment() -> dict[str, str]:
    # Both runs need the same thread count to be bit-identical.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_sigkill_mid_epoch_resume_identical(tmp_path: Path) -> None:
    environment = one_thread_environment()
    reference_run = subprocess.run(
        search_command(tmp_path / "reference"), env=environment, capture_output=True, text=True, timeout=300
    )
    assert reference_run.returncode == 0, reference_run.stderr[-2000:]

    output = tmp_path / "killed"
    process = subprocess.Popen(search_command(output), env=environment, stderr=subprocess.PIPE, text=True)
    seen = []
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        # Kill once the first epoch's checkpoint exists and the second epoch is under way.
        if "epoch 2/2 step 2/8" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)

    assert process.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert any("checkpoint step-00000008.pt written" in line for line in seen)
    status = read_status(output)
    assert status["state"] == "incomplete"
    assert status["checkpoint"] == "step-00000008.pt"
    assert [path.name for path in list_checkpoints(output / "checkpoints")][-1] == "step-00000008.pt"

    rerun = subprocess.run(search_command(output), env=environment, capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from" in rerun.stderr
    assert read_status(output)["state"] == "complete"
    assert_same_search(output, tmp_path / "reference")
