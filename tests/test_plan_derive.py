"""Tests of derive_plan on hand-made alphas, and against a direct NumPy transcription of the rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kdarts.errors import PlanError
from kdarts.plan import DARTS_PRIMITIVES, Alphas, Plan, Provenance, derive_plan, plan_from_genotype
from kdarts.plan.derive import softmax
from kdarts.plan.model import edge_count_for_nodes

PRIMITIVES = list(DARTS_PRIMITIVES)
HIGH = 4.0


def one_hot_row(operation: str, value: float = HIGH, primitives: list[str] = PRIMITIVES) -> list[float]:
    """Return a logit row that is 0 except `value` at `operation`."""
    row = [0.0] * len(primitives)
    row[primitives.index(operation)] = value
    return row


def flat_rows(nodes: int, primitives: list[str] = PRIMITIVES) -> list[list[float]]:
    return [[0.0] * len(primitives) for _ in range(edge_count_for_nodes(nodes))]


def row_index(node: int, input_index: int) -> int:
    """Return the alphas row of the edge from `input_index` into `node` (nodes counted from 2)."""
    return sum(range(2, node)) + input_index


def pairs(plan: Plan, cell_name: str) -> list[tuple[str, int]]:
    return [(edge.operation, edge.input) for edge in getattr(plan, cell_name).edges]


def test_two_nodes_keep_strongest_edges() -> None:
    normal = flat_rows(2)
    normal[row_index(2, 0)] = one_hot_row("sep_conv_3x3")
    normal[row_index(2, 1)] = one_hot_row("dil_conv_5x5")
    normal[row_index(3, 0)] = one_hot_row("skip_connect", 1.0)
    normal[row_index(3, 1)] = one_hot_row("max_pool_3x3", 3.0)
    normal[row_index(3, 2)] = one_hot_row("sep_conv_5x5", 5.0)
    reduce = flat_rows(2)
    reduce[row_index(3, 0)] = one_hot_row("avg_pool_3x3", 2.0)

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": reduce})

    assert plan.nodes == 2
    assert pairs(plan, "normal") == [
        ("sep_conv_3x3", 0),
        ("dil_conv_5x5", 1),
        ("max_pool_3x3", 1),
        ("sep_conv_5x5", 2),
    ]
    assert pairs(plan, "reduce")[2] == ("avg_pool_3x3", 0)
    assert plan.normal.concat == [2, 3]
    assert plan.reduce.concat == [2, 3]


def test_kept_edges_are_ordered_by_input() -> None:
    normal = flat_rows(2)
    normal[row_index(3, 2)] = one_hot_row("sep_conv_3x3", 6.0)
    normal[row_index(3, 0)] = one_hot_row("skip_connect", 3.0)

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(2)})

    assert pairs(plan, "normal")[2:] == [("skip_connect", 0), ("sep_conv_3x3", 2)]


def test_none_dominant_edge_keeps_real_operation() -> None:
    # Node 2 keeps both its edges, so the edge where `none` dominates must still be kept, with
    # its most probable other operation.
    normal = flat_rows(2)
    normal[row_index(2, 0)] = one_hot_row("none", 10.0)
    normal[row_index(2, 0)][PRIMITIVES.index("dil_conv_3x3")] = 1.0

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(2)})

    assert pairs(plan, "normal")[0] == ("dil_conv_3x3", 0)


def test_none_dominant_edge_loses_selection() -> None:
    # `none` has the largest logit of all on input 0, but the strength ignores `none`, so the
    # edge is weak and node 3 keeps inputs 1 and 2.
    normal = flat_rows(2)
    normal[row_index(3, 0)] = one_hot_row("none", 20.0)
    normal[row_index(3, 1)] = one_hot_row("sep_conv_3x3", 2.0)
    normal[row_index(3, 2)] = one_hot_row("skip_connect", 2.5)

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(2)})

    assert pairs(plan, "normal")[2:] == [("sep_conv_3x3", 1), ("skip_connect", 2)]
    assert all(edge.operation != "none" for edge in plan.normal.edges + plan.reduce.edges)


def test_all_none_rows_never_emit_none() -> None:
    rows = [one_hot_row("none", 30.0) for _ in range(edge_count_for_nodes(4))]

    plan = derive_plan({"primitives": PRIMITIVES, "normal": rows, "reduce": rows})

    assert {edge.operation for edge in plan.normal.edges} == {"max_pool_3x3"}
    assert {edge.operation for edge in plan.reduce.edges} == {"max_pool_3x3"}


def test_edge_tie_goes_to_lower_input() -> None:
    normal = flat_rows(2)
    for input_index in range(3):
        normal[row_index(3, input_index)] = one_hot_row("sep_conv_3x3", 2.0)

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(2)})

    assert [edge.input for edge in plan.normal.node_edges(3)] == [0, 1]


def test_permuted_rows_tie_exactly() -> None:
    # The three rows hold the same logits in different orders, so their strengths must be equal
    # to the last bit for the tie rule to apply.
    logits = [0.3, -1.2, 2.7, 0.9, 1.1, -0.4, 2.2, 0.05]
    normal = flat_rows(2)
    normal[row_index(3, 0)] = logits[::-1]
    normal[row_index(3, 1)] = logits[3:] + logits[:3]
    normal[row_index(3, 2)] = logits

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(2)})

    assert [edge.input for edge in plan.normal.node_edges(3)] == [0, 1]


def test_operation_tie_goes_to_earlier_primitive() -> None:
    normal = flat_rows(1)
    normal[0] = [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 3.0, 0.0]
    normal[1] = [0.0] * len(PRIMITIVES)

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal, "reduce": flat_rows(1)})

    assert pairs(plan, "normal") == [("sep_conv_3x3", 0), ("max_pool_3x3", 1)]


def test_subset_of_primitives() -> None:
    primitives = ["skip_connect", "sep_conv_3x3", "max_pool_3x3"]
    normal = flat_rows(2, primitives)
    normal[row_index(2, 1)] = one_hot_row("max_pool_3x3", primitives=primitives)
    normal[row_index(3, 2)] = one_hot_row("sep_conv_3x3", primitives=primitives)

    plan = derive_plan({"primitives": primitives, "normal": normal, "reduce": flat_rows(2, primitives)})

    assert plan.primitives == primitives
    assert pairs(plan, "normal") == [
        ("skip_connect", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 2),
    ]


def darts_v2_alphas() -> dict[str, Any]:
    """Return K=4 alphas whose derived plan is DARTS_V2, with each node's edges in input order."""
    targets = {
        "normal": {
            2: {0: "sep_conv_3x3", 1: "sep_conv_3x3"},
            3: {0: "sep_conv_3x3", 1: "sep_conv_3x3"},
            4: {0: "skip_connect", 1: "sep_conv_3x3"},
            5: {0: "skip_connect", 2: "dil_conv_3x3"},
        },
        "reduce": {
            2: {0: "max_pool_3x3", 1: "max_pool_3x3"},
            3: {1: "max_pool_3x3", 2: "skip_connect"},
            4: {0: "max_pool_3x3", 2: "skip_connect"},
            5: {1: "max_pool_3x3", 2: "skip_connect"},
        },
    }
    alphas: dict[str, Any] = {"primitives": PRIMITIVES}
    for cell_name, nodes in targets.items():
        rows = flat_rows(4)
        for node, chosen_operations in nodes.items():
            for input_index in range(node):
                # Dropped edges favour `none` and a weak real operation, as a real search tends to.
                rows[row_index(node, input_index)] = one_hot_row("none", 2.0)
                rows[row_index(node, input_index)][PRIMITIVES.index("avg_pool_3x3")] = 0.5
            for input_index, operation in chosen_operations.items():
                rows[row_index(node, input_index)] = one_hot_row(operation)
        alphas[cell_name] = rows
    return alphas


def test_four_nodes_derive_darts_v2() -> None:
    darts_v2 = plan_from_genotype(
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
        "('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
        "normal_concat=[2, 3, 4, 5], "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 1), ('skip_connect', 2), "
        "('max_pool_3x3', 0), ('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 2)], "
        "reduce_concat=[2, 3, 4, 5])"
    )

    plan = derive_plan(darts_v2_alphas())

    assert plan.nodes == 4
    assert plan.normal == darts_v2.normal
    assert plan.reduce == darts_v2.reduce


def reference_cell(rows: np.ndarray, primitives: list[str], nodes: int) -> list[tuple[str, int]]:
    """Transcribe the derivation rule with NumPy: DARTS' parse, plus sorting kept edges by input."""
    probabilities = np.exp(rows - rows.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    real = [index for index, name in enumerate(primitives) if name != "none"]
    result: list[tuple[str, int]] = []
    start = 0
    for node in range(2, nodes + 2):
        block = probabilities[start : start + node]
        strengths = block[:, real].max(axis=1)
        strongest = sorted(range(node), key=lambda input_index: -strengths[input_index])[:2]
        for input_index in sorted(strongest):
            operation = real[int(np.argmax(block[input_index, real]))]
            result.append((primitives[operation], input_index))
        start += node
    return result


@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference(seed: int) -> None:
    generator = np.random.default_rng(seed)
    nodes = 2 + seed % 3
    normal = generator.normal(scale=1e-3 if seed == 0 else 1.0, size=(edge_count_for_nodes(nodes), 8))
    reduce = generator.normal(size=(edge_count_for_nodes(nodes), 8))

    plan = derive_plan({"primitives": PRIMITIVES, "normal": normal.tolist(), "reduce": reduce.tolist()})

    assert pairs(plan, "normal") == reference_cell(normal, PRIMITIVES, nodes)
    assert pairs(plan, "reduce") == reference_cell(reduce, PRIMITIVES, nodes)


def test_softmax_sums_to_one() -> None:
    probabilities = softmax([1000.0, 999.0, -1000.0])

    assert sum(probabilities) == pytest.approx(1.0)
    assert probabilities[0] > probabilities[1] > probabilities[2]


def test_provenance_stores_alphas() -> None:
    alphas = darts_v2_alphas()

    plan = derive_plan(alphas, provenance={"dataset": "cifar10", "seed": 2, "epochs": 50, "settings": {"layers": 8}})

    assert plan.provenance is not None
    assert plan.provenance.alphas == Alphas.model_validate(alphas)
    assert plan.provenance.dataset == "cifar10"
    assert plan.provenance.seed == 2
    assert plan.provenance.settings == {"layers": 8}


def test_provenance_without_caller_provenance() -> None:
    alphas = Alphas.model_validate(darts_v2_alphas())

    plan = derive_plan(alphas)

    assert plan.provenance == Provenance(alphas=alphas)


def test_provenance_model_is_accepted() -> None:
    plan = derive_plan(darts_v2_alphas(), provenance=Provenance(val_accuracy=0.87))

    assert plan.provenance is not None
    assert plan.provenance.val_accuracy == 0.87
    assert plan.provenance.alphas is not None


def test_invalid_provenance_names_field() -> None:
    with pytest.raises(PlanError) as raised:
        derive_plan(darts_v2_alphas(), provenance={"dataset": "cifar10", "learning_rate": 0.1})

    assert "learning_rate" in str(raised.value)
    assert "provenance" in str(raised.value)


def test_only_none_primitive_is_rejected() -> None:
    rows = [[1.0] for _ in range(5)]

    with pytest.raises(PlanError) as raised:
        derive_plan({"primitives": ["none"], "normal": rows, "reduce": rows})

    assert '["none"]' in str(raised.value)


def test_invalid_alphas_name_edge() -> None:
    alphas = darts_v2_alphas()
    alphas["reduce"][9] = alphas["reduce"][9][:5]

    with pytest.raises(PlanError) as raised:
        derive_plan(alphas)

    assert "reduce[9]" in str(raised.value)
    assert "5 logits" in str(raised.value)
