"""Summaries of a plan: operation histograms, warnings about known DARTS failure modes, and text."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from kdarts.errors import PlanError
from kdarts.plan.model import CELL_NAMES, Cell, Plan, count_noun

logger = logging.getLogger(__name__)

# Operations without weights. A normal cell made only of them has no weights on its edges.
PARAMETER_FREE_OPERATIONS: frozenset[str] = frozenset({"max_pool_3x3", "avg_pool_3x3", "skip_connect"})


class CellReport(BaseModel):
    """Operation histogram of one cell."""

    edges: int
    operation_counts: dict[str, int]
    skip_connections: int
    parameter_free_edges: int


class PlanReport(BaseModel):
    """Per-cell operation histograms of a plan and warnings about it."""

    nodes: int
    normal: CellReport
    reduce: CellReport
    warnings: list[str]


def state_label(index: int) -> str:
    """Return the display name of cell state `index`: c_{k-2}, c_{k-1}, or the node number index - 2."""
    if index == 0:
        return "c_{k-2}"
    if index == 1:
        return "c_{k-1}"
    return str(index - 2)


def _cell_report(cell: Cell, primitives: list[str]) -> CellReport:
    counts: dict[str, int] = {}
    # Counts follow the primitive order, so histograms of different plans line up.
    for name in primitives:
        count = sum(1 for edge in cell.edges if edge.operation == name)
        if count:
            counts[name] = count

    return CellReport(
        edges=len(cell.edges),
        operation_counts=counts,
        skip_connections=counts.get("skip_connect", 0),
        parameter_free_edges=sum(1 for edge in cell.edges if edge.operation in PARAMETER_FREE_OPERATIONS),
    )


def unused_nodes(cell: Cell) -> list[int]:
    """Return the intermediate nodes (as plan input indices, 2..K+1) whose output never reaches the cell output.

    A node reaches the output when it is in `concat` or is an input of a node that reaches the
    output. Edges only take inputs from earlier states, so one pass from the last node back
    to the first finds every such node.
    """
    reaching = set(cell.concat)
    for node in range(cell.nodes + 1, 1, -1):
        if node in reaching:
            reaching.update(edge.input for edge in cell.node_edges(node))
    return [node for node in range(2, cell.nodes + 2) if node not in reaching]


def _unused_nodes_warning(cell_name: str, cell: Cell, nodes: list[int]) -> str:
    # The text report numbers intermediate nodes from 0, while plan files and genotypes use the
    # state index, so the warning gives both.
    labels = ", ".join(state_label(node) for node in nodes)
    indices = ", ".join(str(node) for node in nodes)
    if len(nodes) == 1:
        finding = (
            f"node {labels} (index {indices} in the plan file and genotype) never reaches the cell output, "
            f"because it is not in the concat list and feeds no node that is. Its edges cost compute "
            f"without changing the output. Add it"
        )
    else:
        finding = (
            f"nodes {labels} (indices {indices} in the plan file and genotype) never reach the cell output, "
            f"because they are not in the concat list and feed no node that is. Their edges cost compute "
            f"without changing the output. Add them"
        )
    example = f"{cell_name}_concat=range(2, {cell.nodes + 2})"
    return f"{cell_name} cell: {finding} to the concat list, e.g. {example} in a genotype."


def plan_report(plan: Plan, *, max_skip_connections: int = 2) -> PlanReport:
    """Count the operations of each cell and warn about known failure modes of DARTS.

    Warns when the normal cell has more than `max_skip_connections` skip_connect edges (the
    cell has collapsed into skip connections), when every normal-cell edge is
    parameter-free, and when a cell has intermediate nodes whose output never reaches the
    cell output (see `unused_nodes`). Raises PlanError when `max_skip_connections` is negative.
    """
    if max_skip_connections < 0:
        raise PlanError(f"max_skip_connections is {max_skip_connections}, expected 0 or more.")

    normal = _cell_report(plan.normal, plan.primitives)
    reduce = _cell_report(plan.reduce, plan.primitives)
    warnings: list[str] = []

    if normal.skip_connections > max_skip_connections:
        warnings.append(
            f"normal cell collapsed into skip connections: {normal.skip_connections} of {normal.edges} edges "
            f"are skip_connect (max {max_skip_connections}). Such cells train poorly. Consider a search with "
            f"early stopping, more regularization, or a limit on skip connections."
        )
    if normal.parameter_free_edges == normal.edges:
        warnings.append(
            f"normal cell has only parameter-free operations (pooling and skip_connect) on all "
            f"{normal.edges} edges, so it cannot learn features."
        )
    for cell_name in CELL_NAMES:
        unused = unused_nodes(getattr(plan, cell_name))
        if unused:
            warnings.append(_unused_nodes_warning(cell_name, getattr(plan, cell_name), unused))

    for warning in warnings:
        logger.debug("plan warning: %s", warning)
    return PlanReport(nodes=plan.nodes, normal=normal, reduce=reduce, warnings=warnings)


def _text_label(index: int) -> str:
    return state_label(index) if index < 2 else f"node {state_label(index)}"


def _format_cell(cell_name: str, cell: Cell, report: CellReport) -> list[str]:
    concat = ", ".join(state_label(node) for node in cell.concat)
    lines = [f"{cell_name} cell: {count_noun(cell.nodes, 'node')}, output c_{{k}} = concat of nodes {concat}"]

    for node in range(2, cell.nodes + 2):
        terms = " + ".join(f"{edge.operation}({_text_label(edge.input)})" for edge in cell.node_edges(node))
        lines.append(f"  {_text_label(node)} = {terms}")

    histogram = ", ".join(f"{name} x{count}" for name, count in report.operation_counts.items())
    lines.append(f"  operations: {histogram}")
    return lines


def format_plan(plan: Plan, *, max_skip_connections: int = 2) -> str:
    """Render a plan as text: each cell's nodes, operation histograms, provenance and warnings.

    Intermediate nodes are numbered from 0 as in the DARTS paper's figures, so node n is
    input n + 2 in the plan file.
    """
    report = plan_report(plan, max_skip_connections=max_skip_connections)
    lines = [
        f"plan format {plan.format_version}: {count_noun(plan.nodes, 'intermediate node')} per cell, "
        f"primitives {', '.join(plan.primitives)}",
        "node n is input n+2 in the plan file; c_{k-2} and c_{k-1} are inputs 0 and 1",
    ]

    for cell_name in CELL_NAMES:
        lines.append("")
        lines.extend(_format_cell(cell_name, getattr(plan, cell_name), getattr(report, cell_name)))

    provenance = plan.provenance
    if provenance is not None:
        details = [
            f"{name}={value}"
            for name, value in (
                ("source", provenance.source),
                ("dataset", provenance.dataset),
                ("seed", provenance.seed),
                ("epochs", provenance.epochs),
                ("val_accuracy", provenance.val_accuracy),
            )
            if value is not None
        ]
        if provenance.alphas is not None:
            details.append("alphas stored")
        if details:
            lines.append("")
            lines.append(f"provenance: {', '.join(details)}")

    lines.append("")
    if report.warnings:
        lines.append("warnings:")
        lines.extend(f"  - {warning}" for warning in report.warnings)
    else:
        lines.append("warnings: none")

    return "\n".join(lines) + "\n"
