"""The DARTS search loop: bilevel training, checkpoints, a time budget and exact resume.

Each step draws one batch from the weight half and one from the architecture half of the training
images, updates the alphas (see `architect.py`), then takes one SGD step on the weights. A
checkpoint holds everything the next step depends on (weights, alphas, both optimizers, the
scheduler, the epoch's data order, every random number generator and the epoch's running sums),
so a search stopped at any step boundary and resumed continues bit for bit as if it had never
stopped, on the same device and thread count.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdarts import __version__
from kdarts.data import Dataset, load_dataset
from kdarts.errors import CheckpointError, SearchError
from kdarts.fileio import write_json_atomic
from kdarts.plan import derive_plan, save_plan
from kdarts.search import outputs
from kdarts.search.architect import Architect
from kdarts.search.batches import ImageBatches, channel_statistics
from kdarts.search.checkpoint import checkpoint_folder, list_checkpoints, load_latest_checkpoint, save_checkpoint
from kdarts.search.config import SearchConfig
from kdarts.search.network import ArchitectureParameters, NetworkConfig, SearchNetwork

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# Extra time kept free at the end of a time budget, on top of the measured cost of one more step
# and one checkpoint, for deriving the plan and writing the outputs.
BUDGET_SAFETY_SECONDS = 5.0


@dataclass
class SearchOptions:
    """How and where a search runs; none of these change its result on a given device."""

    output: Path
    device: str = "auto"
    time_budget: float | None = None
    resume: Path | None = None
    log_every_steps: int | None = None


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


def resolve_device(name: str) -> torch.device:
    """Map `auto`, `cpu` or `cuda` to a torch device, failing clearly when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda was requested but torch finds no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise SearchError(f"invalid device {name!r}; use cpu, cuda or auto")
    return torch.device(name)


class Search:
    """One DARTS search: the network, the alphas, their optimizers and the data order."""

    def __init__(self, config: SearchConfig, options: SearchOptions, dataset: Dataset | None = None):
        self.config = config
        self.options = options
        self.output = Path(options.output)
        self.device = resolve_device(options.device)

        self.dataset = dataset if dataset is not None else load_dataset(config.data)
        self._split_training_images()
        mean, std = channel_statistics(self.dataset.train.images)
        self.normalization = {"mean": mean.tolist(), "std": std.tolist()}
        self.batches = ImageBatches(self.dataset.train.images, self.dataset.train.labels, self.device, mean, std)

        torch.manual_seed(config.seed)
        network_config = NetworkConfig(
            primitives=tuple(config.primitives),
            classes=len(self.dataset.classes),
            init_channels=config.init_channels,
            layers=config.layers,
            nodes=config.nodes,
            in_channels=self.dataset.image_shape[2],
        )
        self.network = SearchNetwork(network_config).to(self.device)
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
        if saved != self.config:
            changed = [
                f"{name}: checkpoint {getattr(saved, name)!r}, now {getattr(self.config, name)!r}"
                for name in SearchConfig.model_fields
                if getattr(saved, name) != getattr(self.config, name)
            ]
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
        python_state = random.getstate()
        random.setstate((python_state[0], tuple(state["rng"]["python"]), python_state[2]))
        self.totals = EpochTotals(**state["totals"])
        self.metrics = list(state["metrics"])
        self.alphas_history = list(state["alphas_history"])
        self.elapsed_before = float(state["elapsed_seconds"])

    def _save_checkpoint(self) -> Path:
        started = time.monotonic()
        global_step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        path = save_checkpoint(checkpoint_folder(self.output), global_step, self.state())
        self.checkpoint_seconds = time.monotonic() - started
        logger.info("checkpoint %s written in %.1f s", path.name, self.checkpoint_seconds)
        return path

    # The loop -----------------------------------------------------------------------------------

    def _session_seconds(self) -> float:
        return time.monotonic() - self.session_start if hasattr(self, "session_start") else 0.0

    def _out_of_time(self, step_seconds: float) -> bool:
        budget = self.options.time_budget
        if budget is None or step_seconds == 0.0:
            return False
        needed = 2 * step_seconds + getattr(self, "checkpoint_seconds", 1.0) + BUDGET_SAFETY_SECONDS
        return self._session_seconds() + needed > budget

    def run(self) -> SearchResult:
        """Search until the last epoch or the time budget, whichever comes first."""
        self.session_start = time.monotonic()
        config = self.config
        logger.info(
            "search: %s, %d epochs of %d steps, %d layers, %d initial channels, %s order, device %s",
            self.dataset.describe(),
            config.epochs,
            self.steps_per_epoch,
            config.layers,
            config.init_channels,
            config.order,
            self.device,
        )
        slowest_step = 0.0
        log_every = self.options.log_every_steps or max(1, self.steps_per_epoch // 4)

        while self.epoch < config.epochs:
            if self.order_epoch != self.epoch:
                self._start_epoch_order()
            learning_rate = self.scheduler.get_last_lr()[0]

            while self.step_in_epoch < self.steps_per_epoch:
                if self._out_of_time(slowest_step):
                    return self._stop_for_budget()
                started = time.monotonic()
                self._train_step(learning_rate)
                step_seconds = time.monotonic() - started
                slowest_step = max(slowest_step, step_seconds)
                self.totals.seconds += step_seconds
                self.step_in_epoch += 1
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

        self.network.train()
        arch_loss, arch_logits = self.architect.step((train_images, train_labels), (arch_images, arch_labels), learning_rate)

        self.weight_optimizer.zero_grad(set_to_none=True)
        logits = self.network(train_images, self.alphas.normal.detach(), self.alphas.reduce.detach())
        loss = nn.functional.cross_entropy(logits, train_labels)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
        self.weight_optimizer.step()

        count = len(train_labels)
        self.totals.train_loss += loss.item() * count
        self.totals.train_correct += int((logits.argmax(1) == train_labels).sum())
        self.totals.arch_loss += arch_loss.item() * len(arch_labels)
        self.totals.arch_correct += int((arch_logits.argmax(1) == arch_labels).sum())
        self.totals.images += count
        self.totals.steps += 1

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

    def _stop_for_budget(self) -> SearchResult:
        checkpoint = self._save_checkpoint()
        self._write_progress_files()
        outputs.write_status(self.output, "incomplete", reason="time budget", **self._progress(checkpoint))
        logger.info(
            "time budget of %.0f s nearly spent: stopped at epoch %d step %d; resume from %s",
            self.options.time_budget,
            self.epoch + 1,
            self.step_in_epoch,
            self.output,
        )
        return SearchResult(False, self.output, self.epoch, reason="time budget", metrics=self.metrics)

    def _finish_search(self) -> SearchResult:
        validation_accuracy = self.evaluate(self.arch_indices)
        provenance = {
            "source": f"kdarts {__version__} search",
            "settings": {
                **self.config.model_dump(mode="json"),
                "device": str(self.device),
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
        outputs.write_status(
            self.output,
            "complete",
            reason="finished",
            validation_accuracy=validation_accuracy,
            **self._progress(None),
        )
        logger.info("search complete: validation accuracy %.3f, plan written to %s", validation_accuracy, plan_path)
        return SearchResult(True, self.output, self.epoch, plan_path=plan_path, reason="finished", metrics=self.metrics)

    @torch.no_grad()
    def evaluate(self, indices: np.ndarray) -> float:
        """Return the supernet's accuracy on the given training images, without augmentation."""
        self.network.eval()
        correct = 0
        size = self.config.batch_size
        for start in range(0, len(indices), size):
            images, labels = self.batches.batch(indices[start : start + size], augment=False)
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
            "checkpoint": checkpoint.name if checkpoint is not None else None,
            "elapsed_seconds": round(self.elapsed_before + self._session_seconds(), 3),
        }


def run_search(config: SearchConfig, options: SearchOptions, dataset: Dataset | None = None) -> SearchResult:
    """Run or resume a search into `options.output`.

    A folder that already holds checkpoints of the same search resumes from the newest valid one,
    so an interrupted command can simply be run again; `options.resume` names another folder to
    resume from (for example a read-only checkpoint dataset). A complete search is not repeated.
    """
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)

    status = outputs.read_status(output)
    if status and status.get("state") == "complete" and (output / outputs.PLAN_FILE).is_file():
        saved = status.get("epochs")
        logger.info("search in %s is already complete (%s epochs); nothing to do", output, saved)
        return SearchResult(True, output, int(saved or config.epochs), plan_path=output / outputs.PLAN_FILE, reason="finished")

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
