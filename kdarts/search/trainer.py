"""The DARTS search loop: bilevel training, checkpoints, a time budget and exact resume.

Each step draws one batch from the weight half and one from the architecture half of the training
images, updates the alphas (see `architect.py`), then takes one SGD step on the weights. A
checkpoint holds everything the next step depends on (weights, alphas, both optimizers, the
scheduler, the epoch's data order, every random number generator and the epoch's running sums),
so a search stopped at any step boundary and resumed continues bit for bit as if it had never
stopped, on the same device, thread count and speed settings.

A session ends in one of three ways, each recorded in `status.json` (see `outputs.py`):

- the last epoch finished: `state` is `complete`, `reason` is `finished`, and `plan.json`,
  `report.json`, `curves.png` and `cells.png` are written;
- the time budget is nearly spent (`reason` is `time budget`) or the session has taken
  `max_steps_per_session` steps (`reason` is `step limit`): a checkpoint is written at the
  current step and `state` is `incomplete`;
- the process dies: `state` stays `incomplete` from the last epoch, and the newest checkpoint is
  the last completed epoch's (or a stop's).

Running the same search again on the same `--out` folder resumes from the newest valid checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdarts import __version__
from kdarts.data import Dataset, load_dataset
from kdarts.errors import CheckpointError, SearchError
from kdarts.fileio import write_json_atomic
from kdarts.plan import derive_plan, save_plan
from kdarts.search import outputs, plots
from kdarts.search.architect import Architect
from kdarts.search.batches import ImageBatches, channel_statistics
from kdarts.search.checkpoint import (
    checkpoint_folder,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from kdarts.search.config import SearchConfig
from kdarts.search.device import Precision, Switch, configure_backends, device_settings, resolve_device
from kdarts.search.network import ArchitectureParameters, NetworkConfig, SearchNetwork
from kdarts.search.step import search_step

logger = logging.getLogger(__name__)

# Format 2: the convolution primitives name their layers (depthwise, pointwise, bn).
CHECKPOINT_FORMAT = 2
# Extra time kept free at the end of a time budget, on top of the measured cost of the next step
# and the checkpoints, evaluation and outputs it commits the search to.
BUDGET_SAFETY_SECONDS = 5.0
# The next step is assumed to take up to this many times the slowest step measured so far.
STEP_TIME_MARGIN = 1.5
# Cost of one evaluation batch (a forward pass without gradients) as a fraction of a search
# step, which takes two forward and two backward passes in first order and about five of each
# in second order. A backward pass costs about two forward passes, so these are upper estimates.
EVALUATION_STEP_FRACTION = {"first": 0.25, "second": 0.1}


@dataclass
class SearchOptions:
    """Run-time options of a search: device, time limits, reports. None change the plan it finds.

    `time_budget` is in seconds from the start of the session, dataset loading included. The
    session stops with a checkpoint when the time left would not cover the next step and the
    work it commits the search to. `max_steps_per_session` stops the session after that many
    steps through the same checkpoint-and-stop path, so chaining and resume can be tested
    independently of the machine's speed.

    `channels_last` and `precision` choose the speed settings (see `device.py`). They change the
    floating-point rounding, so a search resumed with other settings continues correctly but
    not bit for bit. `max_skip_connections` is the limit above which the report warns that the
    normal cell collapsed into skip connections.
    """

    output: Path
    device: str = "auto"
    time_budget: float | None = None
    resume: Path | None = None
    log_every_steps: int | None = None
    max_steps_per_session: int | None = None
    max_skip_connections: int = 2
    channels_last: Switch = "auto"
    precision: Precision = "auto"
    plots: bool = True


@dataclass
class EpochTotals:
    """Running sums over the steps of the current epoch."""

    train_loss: float = 0.0
    train_correct: int = 0
    arch_loss: float = 0.0
    arch_correct: int = 0
    images: int = 0
    steps: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    """Outcome of one call of `run_search`."""

    complete: bool
    output: Path
    epochs_done: int
    plan_path: Path | None = None
    reason: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Search:
    """One DARTS search: the network, the alphas, their optimizers and the data order."""

    def __init__(self, config: SearchConfig, options: SearchOptions, dataset: Dataset | None = None):
        # The time budget counts from here, so loading the dataset counts against it.
        self.session_start = time.monotonic()
        self.config = config
        self.options = options
        self.output = Path(options.output)
        self.device = resolve_device(options.device)
        self.settings = device_settings(self.device, channels_last=options.channels_last, precision=options.precision)
        configure_backends(self.device)

        self.dataset = dataset if dataset is not None else load_dataset(config.data)
        self.dataset_fingerprint = dataset_fingerprint(self.dataset)
        self._split_training_images()
        mean, std = channel_statistics(self.dataset.train.images)
        self.normalization = {"mean": mean.tolist(), "std": std.tolist()}
        self.batches = ImageBatches(
            self.dataset.train.images,
            self.dataset.train.labels,
            self.device,
            mean,
            std,
            memory_format=self.settings.memory_format,
        )

        torch.manual_seed(config.seed)
        network_config = NetworkConfig(
            primitives=tuple(config.primitives),
            classes=len(self.dataset.classes),
            init_channels=config.init_channels,
            layers=config.layers,
            nodes=config.nodes,
            in_channels=self.dataset.image_shape[2],
        )
        self.network = SearchNetwork(network_config).to(self.device, memory_format=self.settings.memory_format)
        self.alphas = ArchitectureParameters(network_config.primitives, config.nodes).to(self.device)

        self.weight_optimizer = torch.optim.SGD(
            self.network.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.weight_optimizer, T_max=config.epochs, eta_min=config.learning_rate_min
        )
        self.architect = Architect(
            self.network,
            self.alphas,
            self.weight_optimizer,
            order=config.order,
            learning_rate=config.arch_learning_rate,
            betas=config.arch_betas,
            weight_decay=config.arch_weight_decay,
        )

        self.order_rng = np.random.default_rng([config.seed, 1])
        self.augment_generator = torch.Generator().manual_seed(config.seed + 2)
        self.epoch = 0
        self.step_in_epoch = 0
        self.epoch_order: dict[str, np.ndarray] = {}
        self.order_epoch = -1
        self.totals = EpochTotals()
        self.metrics: list[dict[str, Any]] = []
        self.alphas_history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0

        # Timing of this session, for the time budget; never part of a checkpoint.
        self.session_steps = 0
        self.slowest_step_seconds = 0.0
        # An estimate until the first checkpoint of the session has been timed.
        self.checkpoint_seconds = 1.0
        self.checkpointed_step: int | None = None

    # Data ---------------------------------------------------------------------------------------

    def _split_training_images(self) -> None:
        count = len(self.dataset.train)
        permutation = np.random.default_rng(self.config.seed).permutation(count)
        if self.config.max_train_images is not None:
            permutation = permutation[: self.config.max_train_images]
        cut = int(len(permutation) * self.config.train_portion)
        self.weight_indices = np.sort(permutation[:cut])
        self.arch_indices = np.sort(permutation[cut:])
        self.steps_per_epoch = min(len(self.weight_indices), len(self.arch_indices)) // self.config.batch_size
        if self.steps_per_epoch == 0:
            raise SearchError(
                f"batch size {self.config.batch_size} is larger than each half of the {len(permutation)} training "
                f"images ({len(self.weight_indices)} for weights, {len(self.arch_indices)} for alphas); "
                "lower --batch-size or use more images"
            )

    def _start_epoch_order(self) -> None:
        self.order_epoch = self.epoch
        self.epoch_order = {
            "weights": self.order_rng.permutation(self.weight_indices),
            "arch": self.order_rng.permutation(self.arch_indices),
        }

    def _batch(self, half: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.config.batch_size
        indices = self.epoch_order[half][step * size : (step + 1) * size]
        return self.batches.batch(indices, augment=True, generator=self.augment_generator)

    # Checkpoints --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return everything needed to continue this search exactly where it is."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kdarts_version": __version__,
            "config": self.config.model_dump(mode="json"),
            "device_settings": self.settings.describe(),
            "dataset_fingerprint": self.dataset_fingerprint,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "network": self.network.state_dict(),
            "alphas": self.alphas.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.architect.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch_order": {half: torch.from_numpy(order.copy()) for half, order in self.epoch_order.items()},
            "order_epoch": self.order_epoch,
            "rng": {
                "order": _generator_state_to_lists(self.order_rng.bit_generator.state),
                "augment": self.augment_generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "python": list(random.getstate()[1]),
            },
            "totals": self.totals.as_dict(),
            "metrics": self.metrics,
            "alphas_history": self.alphas_history,
            "elapsed_seconds": self.elapsed_before + self._session_seconds(),
        }

    def restore(self, state: dict[str, Any], source: Path) -> None:
        """Load a checkpoint written by `state`, after checking it belongs to this search."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source} has checkpoint format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
        saved = SearchConfig.model_validate(state["config"])
        # The data path may differ between sessions (each Kaggle session mounts its inputs anew),
        # so the dataset is compared by content instead.
        changed = [
            f"{name}: checkpoint {getattr(saved, name)!r}, now {getattr(self.config, name)!r}"
            for name in SearchConfig.model_fields
            if name != "data" and getattr(saved, name) != getattr(self.config, name)
        ]
        if state.get("dataset_fingerprint") != self.dataset_fingerprint:
            changed.append(f"dataset: {self.config.data} holds other images than the checkpoint's {saved.data}")
        if changed:
            raise CheckpointError(
                f"checkpoint {source} belongs to a search with other settings ({'; '.join(changed)}); "
                "resume with the same settings or write to a new --out folder"
            )

        self.network.load_state_dict(state["network"])
        self.alphas.load_state_dict(state["alphas"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.architect.optimizer.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.epoch_order = {half: order.numpy().copy() for half, order in state["epoch_order"].items()}
        self.order_epoch = int(state["order_epoch"])
        self.order_rng.bit_generator.state = _generator_state_from_lists(state["rng"]["order"])
        self.augment_generator.set_state(state["rng"]["augment"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        python_state = random.getstate()
        random.setstate((python_state[0], tuple(state["rng"]["python"]), python_state[2]))
        self.totals = EpochTotals(**state["totals"])
        self.metrics = list(state["metrics"])
        self.alphas_history = list(state["alphas_history"])
        self.elapsed_before = float(state["elapsed_seconds"])
        self.checkpointed_step = self.global_step

        saved_settings = state.get("device_settings")
        if saved_settings != self.settings.describe():
            logger.warning(
                "checkpoint %s was written with %s and resumes with %s: the search continues correctly "
                "but not bit for bit as it would have on the first settings",
                source,
                saved_settings,
                self.settings.describe(),
            )

    @property
    def global_step(self) -> int:
        """Steps taken since the search began, over all sessions."""
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    def _save_checkpoint(self) -> Path:
        folder = checkpoint_folder(self.output)
        # A stop right after an epoch's checkpoint has nothing new to save.
        existing = checkpoint_path(folder, self.global_step)
        if self.checkpointed_step == self.global_step and existing.is_file():
            return existing

        started = time.monotonic()
        path = save_checkpoint(folder, self.global_step, self.state())
        self.checkpoint_seconds = time.monotonic() - started
        self.checkpointed_step = self.global_step
        logger.info("checkpoint %s written in %.1f s", path.name, self.checkpoint_seconds)
        return path

    # The loop -----------------------------------------------------------------------------------

    def _session_seconds(self) -> float:
        return time.monotonic() - self.session_start

    def _seconds_needed(self) -> float:
        """Estimate the time the next step takes, with the work it commits the session to."""
        step_seconds = STEP_TIME_MARGIN * self.slowest_step_seconds
        needed = step_seconds + self.checkpoint_seconds + BUDGET_SAFETY_SECONDS
        if self.step_in_epoch + 1 == self.steps_per_epoch:
            # The step ends an epoch, whose checkpoint is written before the session can stop.
            needed += self.checkpoint_seconds
            if self.epoch + 1 == self.config.epochs:
                batches = math.ceil(len(self.arch_indices) / self.config.batch_size)
                needed += batches * EVALUATION_STEP_FRACTION[self.config.order] * step_seconds
        return needed

    def _stop_reason(self) -> str | None:
        """Return why the session must stop before the next step, or None to go on."""
        limit = self.options.max_steps_per_session
        if limit is not None and self.session_steps >= limit:
            return "step limit"
        budget = self.options.time_budget
        # NOTE: the first step of a session always runs because nothing has been timed yet. A
        # budget shorter than one step is overrun by that step.
        if budget is not None and self.session_steps > 0:
            if self._session_seconds() + self._seconds_needed() > budget:
                return "time budget"
        return None

    def run(self) -> SearchResult:
        """Search until the last epoch, the time budget or the step limit, whichever comes first."""
        config = self.config
        logger.info(
            "search: %s, %d epochs of %d steps, %d layers, %d initial channels, %d nodes, %s order, %s",
            self.dataset.describe(),
            config.epochs,
            self.steps_per_epoch,
            config.layers,
            config.init_channels,
            config.nodes,
            config.order,
            self.settings.describe(),
        )
        log_every = self.options.log_every_steps or max(1, self.steps_per_epoch // 4)

        while self.epoch < config.epochs:
            if self.order_epoch != self.epoch:
                self._start_epoch_order()
            learning_rate = self.scheduler.get_last_lr()[0]

            while self.step_in_epoch < self.steps_per_epoch:
                reason = self._stop_reason()
                if reason is not None:
                    return self._stop_session(reason)

                started = time.monotonic()
                self._train_step(learning_rate)
                step_seconds = time.monotonic() - started
                self.slowest_step_seconds = max(self.slowest_step_seconds, step_seconds)
                self.totals.seconds += step_seconds
                self.step_in_epoch += 1
                self.session_steps += 1
                if self.step_in_epoch % log_every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    logger.info(
                        "epoch %d/%d step %d/%d: %.2f s per step",
                        self.epoch + 1,
                        config.epochs,
                        self.step_in_epoch,
                        self.steps_per_epoch,
                        step_seconds,
                    )

            self._finish_epoch(learning_rate)

        return self._finish_search()

    def _train_step(self, learning_rate: float) -> None:
        train_images, train_labels = self._batch("weights", self.step_in_epoch)
        arch_images, arch_labels = self._batch("arch", self.step_in_epoch)

        output = search_step(
            self.network,
            self.alphas,
            self.architect,
            self.weight_optimizer,
            (train_images, train_labels),
            (arch_images, arch_labels),
            learning_rate=learning_rate,
            grad_clip=self.config.grad_clip,
            settings=self.settings,
        )

        train_loss, arch_loss = output.train_loss.item(), output.arch_loss.item()
        if not (math.isfinite(train_loss) and math.isfinite(arch_loss)):
            self._fail_diverged(train_loss, arch_loss)

        count = len(train_labels)
        self.totals.train_loss += train_loss * count
        self.totals.train_correct += int((output.train_logits.argmax(1) == train_labels).sum())
        self.totals.arch_loss += arch_loss * len(arch_labels)
        self.totals.arch_correct += int((output.arch_logits.argmax(1) == arch_labels).sum())
        self.totals.images += count
        self.totals.steps += 1

    def _fail_diverged(self, train_loss: float, arch_loss: float) -> None:
        # No checkpoint is written, so the newest one still contains finite weights and alphas.
        newest = list_checkpoints(checkpoint_folder(self.output))
        message = (
            f"the search diverged at epoch {self.epoch + 1} step {self.step_in_epoch + 1}: the weight loss is "
            f"{train_loss} and the alpha loss {arch_loss}. Nothing was saved after the newest checkpoint "
            f"({newest[-1].name if newest else 'none yet'}); search again with a lower learning_rate or "
            "arch_learning_rate, or with --precision fp32"
        )
        logger.error(message)
        raise SearchError(message)

    def _finish_epoch(self, learning_rate: float) -> None:
        totals = self.totals
        # Each step trains on one weight batch and one architecture batch, so it sees 2x the images.
        images_per_second = 2 * totals.images / totals.seconds if totals.seconds else 0.0
        record = {
            "epoch": self.epoch + 1,
            "learning_rate": learning_rate,
            "train_loss": totals.train_loss / totals.images,
            "train_accuracy": totals.train_correct / totals.images,
            "arch_loss": totals.arch_loss / totals.images,
            "arch_accuracy": totals.arch_correct / totals.images,
            "seconds": totals.seconds,
            "images_per_second": images_per_second,
        }
        self.metrics.append(record)
        self.alphas_history.append({"epoch": self.epoch + 1, **self.alphas_dict()})
        logger.info(
            "epoch %d/%d: train loss %.3f accuracy %.3f, arch loss %.3f accuracy %.3f, %.1f s, %.1f images/s",
            record["epoch"],
            self.config.epochs,
            record["train_loss"],
            record["train_accuracy"],
            record["arch_loss"],
            record["arch_accuracy"],
            record["seconds"],
            images_per_second,
        )

        self.scheduler.step()
        self.epoch += 1
        self.step_in_epoch = 0
        self.totals = EpochTotals()
        checkpoint = self._save_checkpoint()
        self._write_progress_files()
        outputs.write_status(self.output, "incomplete", reason="running", **self._progress(checkpoint))

    def _stop_session(self, reason: str) -> SearchResult:
        checkpoint = self._save_checkpoint()
        self._write_progress_files()
        outputs.write_status(self.output, "incomplete", reason=reason, **self._progress(checkpoint))
        if reason == "time budget":
            logger.info(
                "time budget of %.0f s nearly spent after %.0f s: stopped at epoch %d step %d; run again to resume from %s",
                self.options.time_budget,
                self._session_seconds(),
                self.epoch + 1,
                self.step_in_epoch,
                self.output,
            )
        else:
            logger.info(
                "stopped after %d steps (the session's step limit) at epoch %d step %d; run again to resume from %s",
                self.session_steps,
                self.epoch + 1,
                self.step_in_epoch,
                self.output,
            )
        return SearchResult(False, self.output, self.epoch, reason=reason, metrics=self.metrics)

    def _finish_search(self) -> SearchResult:
        validation_accuracy = self.evaluate(self.arch_indices)
        provenance = {
            "source": f"kdarts {__version__} search",
            "settings": {
                **self.config.model_dump(mode="json"),
                "device": str(self.device),
                "device_settings": self.settings.describe(),
                "search_seconds": self.elapsed_before + self._session_seconds(),
                "classes": self.dataset.classes,
                "train_images": len(self.dataset.train),
                "image_shape": list(self.dataset.image_shape),
                "normalization": self.normalization,
            },
            "dataset": self.dataset.name,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "val_accuracy": validation_accuracy,
        }
        plan = derive_plan(self.alphas_dict(), provenance=provenance)
        plan_path = self.output / outputs.PLAN_FILE
        save_plan(plan, plan_path)
        self._write_progress_files()

        report = outputs.write_report(self.output, plan, max_skip_connections=self.options.max_skip_connections)
        for warning in report.warnings:
            logger.warning("plan: %s", warning)
        if self.options.plots:
            plots.write_plots(self.output, self.metrics, plan)

        # status.json is written last: a search killed before this line resumes and finishes again.
        outputs.write_status(
            self.output,
            "complete",
            reason="finished",
            validation_accuracy=validation_accuracy,
            warnings=report.warnings,
            **self._progress(None),
        )
        logger.info("search complete: validation accuracy %.3f, plan written to %s", validation_accuracy, plan_path)
        return SearchResult(
            True,
            self.output,
            self.epoch,
            plan_path=plan_path,
            reason="finished",
            metrics=self.metrics,
            warnings=report.warnings,
        )

    @torch.no_grad()
    def evaluate(self, indices: np.ndarray) -> float:
        """Return the supernet's accuracy on the given training images, without augmentation."""
        self.network.eval()
        correct = 0
        size = self.config.batch_size
        for start in range(0, len(indices), size):
            images, labels = self.batches.batch(indices[start : start + size], augment=False)
            with self.settings.autocast():
                logits = self.network(images, self.alphas.normal, self.alphas.reduce)
            correct += int((logits.argmax(1) == labels).sum())
        self.network.train()
        return correct / max(1, len(indices))

    # Outputs ------------------------------------------------------------------------------------

    def alphas_dict(self) -> dict[str, Any]:
        """Return the alphas in the plan tools' format: primitives plus one logit row per edge."""
        return {
            "primitives": list(self.config.primitives),
            "normal": self.alphas.normal.detach().cpu().double().tolist(),
            "reduce": self.alphas.reduce.detach().cpu().double().tolist(),
        }

    def _write_progress_files(self) -> None:
        outputs.write_json_lines(self.output / outputs.METRICS_FILE, self.metrics)
        outputs.write_json_lines(self.output / outputs.ALPHAS_HISTORY_FILE, self.alphas_history)
        write_json_atomic(self.output / outputs.ALPHAS_FILE, self.alphas_dict())

    def _progress(self, checkpoint: Path | None) -> dict[str, Any]:
        return {
            "epochs_done": self.epoch,
            "epochs": self.config.epochs,
            "step_in_epoch": self.step_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "global_step": self.global_step,
            "total_steps": self.config.epochs * self.steps_per_epoch,
            "checkpoint": checkpoint.name if checkpoint is not None else None,
            "elapsed_seconds": round(self.elapsed_before + self._session_seconds(), 3),
            "session_steps": self.session_steps,
            "device_settings": self.settings.describe(),
            "config": self.config.model_dump(mode="json"),
        }


def run_search(config: SearchConfig, options: SearchOptions, dataset: Dataset | None = None) -> SearchResult:
    """Run or resume a search into `options.output`.

    A folder that already contains checkpoints of the same search resumes from the newest valid
    one, so an interrupted command can simply be run again. `options.resume` names another folder
    to resume from, for example a read-only checkpoint dataset. A complete search is not repeated
    (SearchError if it ran with other settings), and checkpoints of other settings raise
    CheckpointError.
    """
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)

    status = outputs.read_status(output)
    if status and status.get("state") == "complete" and (output / outputs.PLAN_FILE).is_file():
        _check_complete_settings(status, config, output)
        saved = status.get("epochs")
        logger.info("search in %s is already complete (%s epochs); nothing to do", output, saved)
        return SearchResult(
            True,
            output,
            int(saved or config.epochs),
            plan_path=output / outputs.PLAN_FILE,
            reason="finished",
            warnings=list(status.get("warnings", [])),
        )

    search = Search(config, options, dataset)
    source = Path(options.resume) if options.resume is not None else output
    folder = source if list_checkpoints(source) else checkpoint_folder(source)
    found = load_latest_checkpoint(folder)
    if found is not None:
        path, state = found
        search.restore(state, path)
        logger.info("resumed from %s at epoch %d step %d", path, search.epoch + 1, search.step_in_epoch)
    elif options.resume is not None:
        raise CheckpointError(f"no checkpoint found in {folder}; check the --resume folder")
    else:
        outputs.write_status(output, "incomplete", reason="starting", epochs_done=0, epochs=config.epochs)
    return search.run()


def _check_complete_settings(status: dict[str, Any], config: SearchConfig, output: Path) -> None:
    """Raise SearchError when the complete search in `output` ran with other settings than `config`."""
    saved_data = status.get("config")
    if saved_data is None:
        return
    saved = SearchConfig.model_validate(saved_data)
    # The data path may differ between sessions, as in `Search.restore`.
    changed = [
        f"{name}: finished with {getattr(saved, name)!r}, now {getattr(config, name)!r}"
        for name in SearchConfig.model_fields
        if name != "data" and getattr(saved, name) != getattr(config, name)
    ]
    if changed:
        raise SearchError(
            f"the search in {output} is complete but ran with other settings ({'; '.join(changed)}); "
            "write to a new --out folder or repeat the finished settings"
        )


def dataset_fingerprint(dataset: Dataset) -> str:
    """Return the SHA-256 of the training images and labels, which identifies a dataset by content."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(dataset.train.images).tobytes())
    digest.update(np.ascontiguousarray(dataset.train.labels).astype(np.int64).tobytes())
    return digest.hexdigest()


def _generator_state_to_lists(state: dict[str, Any]) -> dict[str, Any]:
    # A PCG64 state holds 128-bit integers; they are stored as decimal strings so that the
    # checkpoint loads with torch.load(weights_only=True).
    return {
        "bit_generator": state["bit_generator"],
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": state["has_uint32"],
        "uinteger": state["uinteger"],
    }


def _generator_state_from_lists(saved: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": saved["bit_generator"],
        "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
        "has_uint32": saved["has_uint32"],
        "uinteger": saved["uinteger"],
    }
