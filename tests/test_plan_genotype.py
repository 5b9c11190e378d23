"""Tests of genotype string conversion, with the DARTS_V2 genotype of the DARTS paper."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdarts.errors import PlanError
from kdarts.plan import DARTS_PRIMITIVES, Plan, Provenance, plan_from_genotype, plan_to_genotype

DATA_DIR = Path(__file__).parent / "data" / "plans"

DARTS_V2_NORMAL = [
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("skip_connect", 0),
    ("dil_conv_3x3", 2),
]
DARTS_V2_REDUCE = [
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 1),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
    ("max_pool_3x3", 0),
    ("skip_connect", 2),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
]
DARTS_V2 = (
    f"Genotype(normal={DARTS_V2_NORMAL!r}, normal_concat=range(2, 6), "
    f"reduce={DARTS_V2_REDUCE!r}, reduce_concat=range(2, 6))"
)
# plan_to_genotype writes concat as a list.
DARTS_V2_CANONICAL = (
    f"Genotype(normal={DARTS_V2_NORMAL!r}, normal_concat=[2, 3, 4, 5], "
    f"reduce={DARTS_V2_REDUCE!r}, reduce_concat=[2, 3, 4, 5])"
)


def pairs(plan: Plan, cell_name: str) -> list[tuple[str, int]]:
    return [(edge.operation, edge.input) for edge in getattr(plan, cell_name).edges]


def test_darts_v2_parses() -> None:
    plan = plan_from_genotype(DARTS_V2)

    assert pairs(plan, "normal") == DARTS_V2_NORMAL
    assert pairs(plan, "reduce") == DARTS_V2_REDUCE
    assert plan.normal.concat == [2, 3, 4, 5]
    assert plan.reduce.concat == [2, 3, 4, 5]
    assert plan.primitives == list(DARTS_PRIMITIVES)
    assert plan.provenance is None


def test_darts_v2_formats_canonically() -> None:
    assert plan_to_genotype(plan_from_genotype(DARTS_V2)) == DARTS_V2_CANONICAL


def test_plan_genotype_plan_round_trip() -> None:
    plan = plan_from_genotype(DARTS_V2)

    assert plan_from_genotype(plan_to_genotype(plan)) == plan


def test_round_trip_with_custom_primitives() -> None:
    primitives = ["skip_connect", "sep_conv_3x3", "conv_7x1_1x7"]
    text = (
        "Genotype(normal=[('conv_7x1_1x7', 0), ('skip_connect', 1)], normal_concat=[2], "
        "reduce=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0)], reduce_concat=[2])"
    )

    plan = plan_from_genotype(text, primitives=primitives)

    assert plan.primitives == primitives
    assert plan_to_genotype(plan) == text
    assert plan_from_genotype(plan_to_genotype(plan), primitives=primitives) == plan


def test_genotype_file_fixture_parses() -> None:
    text = (DATA_DIR / "darts_v2_genotype.txt").read_text()

    assert plan_from_genotype(text) == plan_from_genotype(DARTS_V2)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(DARTS_V2_CANONICAL, id="list concat"),
        pytest.param(f"DARTS_V2 = {DARTS_V2}", id="assignment"),
        pytest.param(DARTS_V2.removeprefix("Genotype(").removesuffix(")"), id="without wrapper"),
        pytest.param(
            f"Genotype({DARTS_V2_NORMAL!r}, range(2, 6), {DARTS_V2_REDUCE!r}, (2, 3, 4, 5))", id="positional"
        ),
        pytest.param(DARTS_V2.replace("range(2, 6)", "list(range(2, 6))"), id="list of range"),
        pytest.param(f"genotypes.{DARTS_V2}", id="module prefix"),
        pytest.param(f"\n  {DARTS_V2}  # from genotypes.py\n", id="whitespace and comment"),
    ],
)
def test_accepted_genotype_forms(text: str) -> None:
    assert plan_from_genotype(text) == plan_from_genotype(DARTS_V2)


def test_range_with_one_bound() -> None:
    text = DARTS_V2.replace("normal_concat=range(2, 6)", "normal_concat=range(6)")

    with pytest.raises(PlanError) as raised:
        plan_from_genotype(text)

    # range(6) includes the cell inputs 0 and 1, which cannot be concatenated.
    assert "normal.concat[0] is 0" in str(raised.value)


def test_unknown_operation_lists_known_ones() -> None:
    text = DARTS_V2.replace("('dil_conv_3x3', 2)", "('conv_3x3', 2)")

    with pytest.raises(PlanError) as raised:
        plan_from_genotype(text)

    message = str(raised.value)
    assert "normal[7]" in message
    assert "'conv_3x3'" in message
    assert "'dil_conv_5x5'" in message


def test_none_operation_is_rejected() -> None:
    text = DARTS_V2.replace("('skip_connect', 2), ('max_pool_3x3', 1)", "('skip_connect', 2), ('none', 1)", 1)

    with pytest.raises(PlanError) as raised:
        plan_from_genotype(text)

    assert "reduce[3]" in str(raised.value)
    assert "'none'" in str(raised.value)


def test_input_out_of_range_names_field() -> None:
    text = DARTS_V2.replace("('sep_conv_3x3', 1), ('skip_connect', 0)", "('sep_conv_3x3', 4), ('skip_connect', 0)")

    with pytest.raises(PlanError) as raised:
        plan_from_genotype(text)

    assert "normal.edges[4].input is 4" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(DARTS_V2.replace(", reduce_concat=range(2, 6)", ""), "['reduce_concat']", id="missing field"),
        pytest.param(DARTS_V2.replace("Genotype(", "Genotype(depth=3, "), "['depth']", id="unknown field"),
        pytest.param(DARTS_V2.replace("Genotype(", "Genotype([], "), "normal twice", id="field set twice"),
        pytest.param(DARTS_V2.replace("Genotype", "Architecture"), "Architecture(...)", id="other call"),
        pytest.param(DARTS_V2[:-1], "not valid Python syntax", id="syntax error"),
        pytest.param("", "empty", id="empty text"),
        pytest.param(f"{DARTS_V2}\n{DARTS_V2}", "2 statements", id="two genotypes"),
        pytest.param("[('sep_conv_3x3', 0)]", "not a Genotype(...) call", id="bare list"),
        pytest.param(DARTS_V2.replace("range(2, 6)", "range(2, n)", 1), "range(2, n)", id="range of name"),
        pytest.param(DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2.0)"), "2.0", id="float input"),
        pytest.param(DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3',)"), "normal[7]", id="short pair"),
    ],
)
def test_malformed_genotype_message(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as raised:
        plan_from_genotype(text)

    assert expected in str(raised.value)


def test_code_is_never_evaluated() -> None:
    # Evaluating either expression would raise ZeroDivisionError or run a call, not PlanError.
    with pytest.raises(PlanError):
        plan_from_genotype(DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 1 // 0)"))
    with pytest.raises(PlanError):
        plan_from_genotype(DARTS_V2.replace("range(2, 6)", "__import__('os').getcwd()", 1))


def test_provenance_is_not_part_of_genotype() -> None:
    plan = plan_from_genotype(DARTS_V2).model_copy(update={"provenance": Provenance(seed=1)})

    assert plan_to_genotype(plan) == DARTS_V2_CANONICAL
