"""PNG figures of a finished search: training curves and the found cells, drawn with matplotlib's Agg."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from kdarts.errors import PlanError
from kdarts.fileio import write_bytes_atomic
from kdarts.plan import Plan, draw_plan
from kdarts.search import outputs

logger = logging.getLogger(__name__)

_DPI = 110


def draw_curves(metrics: list[dict[str, Any]], path: Path) -> None:
    """Draw loss, accuracy and throughput per epoch from `metrics.jsonl` records into a PNG file."""
    # Imported here: matplotlib takes about a second to import and only finished searches draw.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in metrics]
    figure = Figure(figsize=(12, 3.6), dpi=_DPI)
    # An explicit Agg canvas keeps drawing independent of pyplot's global backend.
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes, speed_axes = figure.subplots(1, 3)

    loss_axes.plot(epochs, [record["train_loss"] for record in metrics], marker="o", label="weights (train half)")
    loss_axes.plot(epochs, [record["arch_loss"] for record in metrics], marker="o", label="alphas (validation half)")
    loss_axes.set_title("cross-entropy loss")

    accuracy_axes.plot(epochs, [record["train_accuracy"] for record in metrics], marker="o", label="weights (train half)")
    accuracy_axes.plot(epochs, [record["arch_accuracy"] for record in metrics], marker="o", label="alphas (validation half)")
    accuracy_axes.set_title("accuracy")
    accuracy_axes.set_ylim(0.0, 1.0)

    speed_axes.plot(epochs, [record["images_per_second"] for record in metrics], marker="o", color="C2")
    speed_axes.set_title("images per second")

    for axes in (loss_axes, accuracy_axes, speed_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    loss_axes.legend(fontsize=8)
    accuracy_axes.legend(fontsize=8)
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    logger.info("drew training curves to %s", path)


def write_plots(output: Path, metrics: list[dict[str, Any]], plan: Plan) -> None:
    """Write `curves.png` and `cells.png` into `output`, logging instead of raising on failure.

    The plan and status are what a search must deliver, so a figure that cannot be drawn does
    not fail the search.
    """
    output = Path(output)
    try:
        draw_curves(metrics, output / outputs.CURVES_FILE)
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("could not draw %s: %s", output / outputs.CURVES_FILE, error)
    try:
        draw_plan(plan, output / outputs.CELLS_FILE)
    except (OSError, ValueError, RuntimeError, PlanError) as error:
        logger.warning("could not draw %s: %s", output / outputs.CELLS_FILE, error)
