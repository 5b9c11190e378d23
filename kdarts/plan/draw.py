"""Draw the cells of a plan as graph diagrams in a PNG, SVG, PDF or JPEG file, with matplotlib."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from kdarts.errors import PlanError
from kdarts.plan.model import CELL_NAMES, Cell, Plan, write_bytes_atomic
from kdarts.plan.report import state_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

# The cell is drawn as an arc diagram: all states on one horizontal line, in the order
# c_{k-2}, c_{k-1}, node 0 .. node K-1, c_{k}, with each edge an arc whose height grows with
# the number of states it spans, so labels of different edges rarely overlap. The first edge of
# each node arcs above the line and the second below it.
_STATE_SPACING = 1.0
# Curvature of arc3 arrows: the arc's height is half this fraction of its chord length.
_EDGE_CURVATURE = 0.5
_CONCAT_CURVATURE = 0.25
_INCHES_PER_UNIT = 1.3
# Points between a state's center and the start or end of an arrow, so arrows stop at the box.
_ARROW_SHRINK = 14
_COLORS = {"input": "#c8e6c9", "node": "#bbdefb", "output": "#fff9c4"}
_DPI = 120

# File suffixes (lowercase) that draw_plan writes, mapped to matplotlib's savefig format names.
# JPEG goes through Pillow, a matplotlib dependency.
IMAGE_FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpeg", ".jpeg": "jpeg"}


def _positions(nodes: int) -> dict[int | str, tuple[float, float]]:
    """Return the center of each state: 0 and 1 for the inputs, 2.. for nodes, "output" for c_{k}."""
    positions: dict[int | str, tuple[float, float]] = {
        index: (_STATE_SPACING * index, 0.0) for index in range(nodes + 2)
    }
    positions["output"] = (_STATE_SPACING * (nodes + 2), 0.0)
    return positions


def _draw_box(axes: Axes, center: tuple[float, float], label: str, color: str) -> None:
    axes.text(
        *center,
        label,
        ha="center",
        va="center",
        fontsize=11,
        zorder=3,
        bbox={"boxstyle": "round,pad=0.4", "facecolor": color, "edgecolor": "#424242"},
    )


def _draw_edge(
    axes: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    curvature: float,
    color: str,
    label: str | None,
) -> None:
    from matplotlib.patches import FancyArrowPatch

    arrow = FancyArrowPatch(
        start,
        end,
        connectionstyle=f"arc3,rad={curvature}",
        arrowstyle="-|>",
        mutation_scale=12,
        shrinkA=_ARROW_SHRINK,
        shrinkB=_ARROW_SHRINK,
        color=color,
        linewidth=1.4,
        linestyle="-" if label else "--",
        zorder=1,
    )
    axes.add_patch(arrow)
    if label is None:
        return

    # arc3 bends the edge into a quadratic Bezier curve whose control point lies `curvature`
    # times the chord length off the chord's midpoint, so the curve's midpoint lies half that far.
    (x1, y1), (x2, y2) = start, end
    label_x = (x1 + x2) / 2 + curvature * (y2 - y1) / 2
    label_y = (y1 + y2) / 2 - curvature * (x2 - x1) / 2
    axes.text(
        label_x,
        label_y,
        label,
        ha="center",
        va="center",
        fontsize=8,
        color=color,
        zorder=2,
        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )


def _draw_cell(axes: Axes, cell_name: str, cell: Cell, primitives: list[str]) -> None:
    positions = _positions(cell.nodes)
    palette = [f"C{index % 10}" for index in range(len(primitives))]
    colors = dict(zip(primitives, palette))

    for node in range(2, cell.nodes + 2):
        for slot, edge in enumerate(cell.node_edges(node)):
            # A negative arc3 curvature bends a left-to-right arrow upwards.
            curvature = -_EDGE_CURVATURE if slot == 0 else _EDGE_CURVATURE
            _draw_edge(
                axes,
                positions[edge.input],
                positions[node],
                curvature=curvature,
                color=colors.get(edge.operation, "black"),
                label=edge.operation,
            )

    for node in cell.concat:
        _draw_edge(
            axes, positions[node], positions["output"], curvature=_CONCAT_CURVATURE, color="#9e9e9e", label=None
        )

    for index in (0, 1):
        _draw_box(axes, positions[index], state_label(index), _COLORS["input"])
    for node in range(2, cell.nodes + 2):
        _draw_box(axes, positions[node], state_label(node), _COLORS["node"])
    _draw_box(axes, positions["output"], "c_{k}", _COLORS["output"])

    axes.set_xlim(*_x_limits(cell.nodes))
    axes.set_ylim(*_y_limits(cell.nodes))
    axes.set_title(f"{cell_name} cell", fontsize=13)
    axes.set_axis_off()


def _x_limits(nodes: int) -> tuple[float, float]:
    margin = 0.6 * _STATE_SPACING
    return -margin, _STATE_SPACING * (nodes + 2) + margin


def _y_limits(nodes: int) -> tuple[float, float]:
    # The highest arc is the edge from input 0 to the last node, K + 1 states away.
    highest_arc = _EDGE_CURVATURE * _STATE_SPACING * (nodes + 1) / 2
    margin = 0.35
    return -highest_arc - margin, highest_arc + margin


def image_format(path: str | os.PathLike[str]) -> str:
    """Return matplotlib's format name for the suffix of `path`, raising PlanError for other suffixes."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in IMAGE_FORMATS:
        return IMAGE_FORMATS[suffix]

    found = f"has the suffix {target.suffix}" if target.suffix else "has no suffix"
    suffixes = list(IMAGE_FORMATS)
    raise PlanError(
        f"cannot draw '{target}': the file name {found}, but cell diagrams are written as "
        f"{', '.join(suffixes[:-1])} or {suffixes[-1]} files. Name the output file with one of these suffixes."
    )


def draw_plan(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Draw the normal and reduction cells of `plan` as graph diagrams into an image file at `path`.

    Each diagram shows the inputs c_{k-2} and c_{k-1}, intermediate nodes 0..K-1, and the
    output c_{k}, with each edge labelled by its operation. The suffix of `path` selects the
    format: .png, .svg, .pdf, .jpg or .jpeg, in any case. The file is written atomically.
    Raises PlanError for another suffix or when the file cannot be written.
    """
    file_format = image_format(path)

    # Imported here because matplotlib takes a noticeable time to import, and most users of
    # kdarts.plan never draw.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_low, x_high = _x_limits(plan.nodes)
    y_low, y_high = _y_limits(plan.nodes)
    # Equal inches per data unit on both axes keep arcs round and labels evenly spaced.
    width = (x_high - x_low) * _INCHES_PER_UNIT
    height = len(CELL_NAMES) * ((y_high - y_low) * _INCHES_PER_UNIT + 0.5)
    figure = Figure(figsize=(width, height), dpi=_DPI)
    # An explicit Agg canvas keeps drawing independent of pyplot's global backend.
    FigureCanvasAgg(figure)

    for row, cell_name in enumerate(CELL_NAMES):
        axes = figure.add_subplot(len(CELL_NAMES), 1, row + 1)
        _draw_cell(axes, cell_name, getattr(plan, cell_name), plan.primitives)
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format=file_format)
    write_bytes_atomic(path, buffer.getvalue())
    logger.info("drew plan cells to %s as %s", path, file_format)
