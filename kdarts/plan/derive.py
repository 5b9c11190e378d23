"""Derive a discrete plan from the architecture logits (alphas) of a DARTS search."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kdarts.errors import PlanError
from kdarts.plan.model import (
    CELL_NAMES,
    EDGES_PER_NODE,
    Alphas,
    Cell,
    Edge,
    Plan,
    Provenance,
    alphas_from_data,
    describe_validation_error,
    format_json_value,
    plan_from_data,
)

logger = logging.getLogger(__name__)


def softmax(logits: list[float]) -> list[float]:
    """Return the softmax of `logits`.

    The sum uses math.fsum, which rounds exactly, so two rows that are permutations of each
    other give bit-identical probabilities and tie exactly.
    """
    largest = max(logits)
    exponentials = [math.exp(value - largest) for value in logits]
    total = math.fsum(exponentials)
    return [value / total for value in exponentials]


def _best_operation(probabilities: list[float], candidates: list[int]) -> int:
    # Strict ">" keeps the first maximum, so the earlier primitive wins a tie.
    best = candidates[0]
    for index in candidates[1:]:
        if probabilities[index] > probabilities[best]:
            best = index
    return best


def _derive_cell(rows: list[list[float]], primitives: list[str], nodes: int) -> Cell:
    candidates = [index for index, name in enumerate(primitives) if name != "none"]
    edges: list[Edge] = []
    row_start = 0

    for node in range(2, nodes + 2):
        # (strength, input, operation index) of each candidate edge into this node.
        scored: list[tuple[float, int, int]] = []
        for input_index in range(node):
            probabilities = softmax(rows[row_start + input_index])
            operation = _best_operation(probabilities, candidates)
            scored.append((probabilities[operation], input_index, operation))
        row_start += node

        # Sorting by (-strength, input) makes the lower input index win a tie in strength.
        strongest = sorted(scored, key=lambda item: (-item[0], item[1]))[:EDGES_PER_NODE]
        for _, input_index, operation in sorted(strongest, key=lambda item: item[1]):
            edges.append(Edge(operation=primitives[operation], input=input_index))

    return Cell(edges=edges, concat=list(range(2, nodes + 2)))


def _provenance_with_alphas(provenance: Mapping[str, Any] | Provenance | None, alphas: Alphas) -> Provenance:
    if provenance is None:
        return Provenance(alphas=alphas)
    if isinstance(provenance, Provenance):
        return provenance.model_copy(update={"alphas": alphas})

    try:
        validated = Provenance.model_validate({**provenance, "alphas": alphas})
    except ValidationError as error:
        raise PlanError(f"invalid provenance: {describe_validation_error(error)}") from error
    return validated


def derive_plan(
    alphas: Mapping[str, Any] | Alphas,
    *,
    provenance: Mapping[str, Any] | Provenance | None = None,
) -> Plan:
    """Derive a plan from the architecture logits of a DARTS search.

    For each edge, the softmax over its logits gives operation probabilities, and the edge's
    strength is its largest probability among the operations other than `none`. Each
    intermediate node keeps its two strongest incoming edges, each with its most probable
    operation other than `none`, so `none` never appears in the plan. Ties go to the lower
    input index for edges and to the primitive listed first for operations. Within a node the
    kept edges are ordered by input index, and each cell concatenates all its intermediate
    nodes. The plan keeps the alphas' primitive list.

    `provenance` is stored with the plan, and its `alphas` field is set to `alphas`. Raises
    PlanError when the alphas or the provenance are invalid, or when the primitive list has no
    operation other than `none`.
    """
    checked = alphas_from_data(alphas, source="alphas")

    if all(name == "none" for name in checked.primitives):
        raise PlanError(
            f"alphas primitives are {format_json_value(checked.primitives)}, with no operation other than 'none', "
            f"so no edge can be derived. Search with at least one real operation."
        )

    nodes = checked.nodes
    cells = {
        cell_name: _derive_cell(getattr(checked, cell_name), checked.primitives, nodes) for cell_name in CELL_NAMES
    }

    plan_data = {
        "primitives": list(checked.primitives),
        "normal": cells["normal"].model_dump(),
        "reduce": cells["reduce"].model_dump(),
        "provenance": _provenance_with_alphas(provenance, checked).model_dump(),
    }
    plan = plan_from_data(plan_data, source="derived plan")
    logger.info("derived a plan with %d intermediate nodes per cell", nodes)
    return plan
