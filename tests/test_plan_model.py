"""Tests of the plan and alphas models: validation messages, loading and atomic saving."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kdarts.errors import PlanError
from kdarts.plan import DARTS_PRIMITIVES, Alphas, Plan, Provenance, load_alphas, load_plan, save_plan
from kdarts.plan.model import edge_count_for_nodes, nodes_for_edge_count

DATA_DIR = Path(__file__).parent / "data" / "plans"


def plan_data() -> dict[str, Any]:
    """Return the DARTS_V2 plan fixture as a dict, fresh for each caller to change."""
    return json.loads((DATA_DIR / "darts_v2_plan.json").read_text())


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_fixture_plan_loads() -> None:
    plan = load_plan(DATA_DIR / "darts_v2_plan.json")

    assert plan.nodes == 4
    assert plan.primitives == list(DARTS_PRIMITIVES)
    assert plan.normal.concat == [2, 3, 4, 5]
    assert plan.normal.node_edges(5)[1].operation == "dil_conv_3x3"
    assert plan.normal.node_edges(5)[1].input == 2


def test_save_load_round_trip(tmp_path: Path) -> None:
    plan = Plan.model_validate(plan_data())
    plan = plan.model_copy(update={"provenance": Provenance(dataset="cifar10", seed=2, epochs=50, val_accuracy=0.88)})
    path = tmp_path / "plan.json"

    save_plan(plan, path)

    assert load_plan(path) == plan


def test_save_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    directory = tmp_path / "plans"
    directory.mkdir()
    path = directory / "plan.json"
    path.write_text("old content")
    plan = Plan.model_validate(plan_data())

    plan.save(path)

    assert json.loads(path.read_text())["format_version"] == 1
    assert sorted(item.name for item in directory.iterdir()) == ["plan.json"]


def test_save_to_missing_directory_names_file(tmp_path: Path) -> None:
    plan = Plan.model_validate(plan_data())
    target = tmp_path / "absent" / "plan.json"

    with pytest.raises(PlanError) as raised:
        save_plan(plan, target)

    assert str(target) in str(raised.value)


def test_to_json_leaves_out_unset_provenance() -> None:
    plan = Plan.model_validate(plan_data())
    with_provenance = plan.model_copy(update={"provenance": Provenance(seed=3)})

    assert "provenance" not in json.loads(plan.to_json())
    assert json.loads(with_provenance.to_json())["provenance"] == {"seed": 3}


def test_model_validate_raises_validation_error() -> None:
    data = plan_data()
    data["normal"]["edges"][0]["operation"] = "conv_7x7"

    with pytest.raises(ValidationError):
        Plan.model_validate(data)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _shrink_reduce_cell(data: dict[str, Any]) -> None:
    data["reduce"]["edges"] = data["reduce"]["edges"][:6]
    data["reduce"]["concat"] = [2, 3, 4]


# (case id, change to the DARTS_V2 plan, field path expected in the message, value expected in the message)
INVALID_PLANS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "unknown operation",
        _set(["normal", "edges", 5, "operation"], "conv_7x7"),
        "normal.edges[5].operation",
        '"conv_7x7"',
    ),
    ("none operation", _set(["reduce", "edges", 0, "operation"], "none"), "reduce.edges[0].operation", "'none'"),
    ("input not below node", _set(["normal", "edges", 5, "input"], 4), "normal.edges[5].input", "is 4"),
    ("input of first node", _set(["reduce", "edges", 1, "input"], 2), "reduce.edges[1].input", "is 2"),
    ("negative input", _set(["normal", "edges", 0, "input"], -1), "normal.edges[0].input", "-1"),
    ("input as string", _set(["normal", "edges", 3, "input"], "1"), "normal.edges[3].input", '"1"'),
    ("odd edge count", _delete(["normal", "edges", 7]), "normal.edges", "7 edges"),
    ("no edges", _set(["reduce", "edges"], []), "reduce.edges", "is empty"),
    ("concat out of range", _set(["normal", "concat"], [2, 3, 4, 6]), "normal.concat[3]", "is 6"),
    ("concat input state", _set(["reduce", "concat"], [1, 2, 3]), "reduce.concat[0]", "is 1"),
    ("concat duplicate", _set(["normal", "concat"], [2, 3, 3, 5]), "normal.concat", "[3]"),
    ("concat empty", _set(["normal", "concat"], []), "normal.concat", "is empty"),
    ("missing cell", _delete(["reduce"]), "reduce", "missing"),
    ("missing concat", _delete(["normal", "concat"]), "normal.concat", "missing"),
    ("missing primitives", _delete(["primitives"]), "primitives", "missing"),
    ("unknown top-level field", _set(["colour"], "red"), "colour", '"red"'),
    ("unknown edge field", _set(["normal", "edges", 1, "weight"], 0.5), "normal.edges[1].weight", "0.5"),
    ("format version", _set(["format_version"], 2), "format_version", "is 2"),
    ("duplicate primitive", _set(["primitives"], ["skip_connect", "skip_connect", "sep_conv_3x3"]),
     "primitives", '["skip_connect"]'),
    ("empty primitives", _set(["primitives"], []), "primitives", "is empty"),
    ("different node counts", _shrink_reduce_cell, "reduce cell", "has 3"),
]


@pytest.mark.parametrize(
    ("change", "field_path", "value"),
    [case[1:] for case in INVALID_PLANS],
    ids=[case[0] for case in INVALID_PLANS],
)
def test_invalid_plan_message(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], field_path: str, value: str
) -> None:
    data = plan_data()
    change(data)
    path = write_json(tmp_path / "broken.json", data)

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    message = str(raised.value)
    assert str(path) in message
    assert field_path in message
    assert value in message


def test_plan_reports_every_problem(tmp_path: Path) -> None:
    data = plan_data()
    data["normal"]["edges"][2]["operation"] = "conv_7x7"
    data["reduce"]["edges"][4]["input"] = 9
    path = write_json(tmp_path / "two.json", data)

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert "normal.edges[2].operation" in str(raised.value)
    assert "reduce.edges[4].input" in str(raised.value)


def test_plan_with_custom_primitives_loads() -> None:
    data = plan_data()
    data["primitives"] = ["sep_conv_3x3", "skip_connect", "max_pool_3x3", "dil_conv_3x3", "conv_7x1_1x7"]
    data["normal"]["edges"][0]["operation"] = "conv_7x1_1x7"

    plan = Plan.model_validate(data)

    assert plan.normal.edges[0].operation == "conv_7x1_1x7"


def test_load_plan_bad_json_names_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"format_version": 1,,}')

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert str(path) in str(raised.value)
    assert "line 1" in str(raised.value)


def test_load_plan_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert "not found" in str(raised.value)
    assert str(path) in str(raised.value)


def test_load_plan_rejects_json_list(tmp_path: Path) -> None:
    path = write_json(tmp_path / "list.json", [plan_data()])

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert "expected a JSON object" in str(raised.value)


def alphas_data(nodes: int = 2, primitives: tuple[str, ...] = DARTS_PRIMITIVES) -> dict[str, Any]:
    rows = [[0.0] * len(primitives) for _ in range(edge_count_for_nodes(nodes))]
    return {"primitives": list(primitives), "normal": copy.deepcopy(rows), "reduce": copy.deepcopy(rows)}


@pytest.mark.parametrize(("nodes", "edges"), [(1, 2), (2, 5), (3, 9), (4, 14), (5, 20)])
def test_edge_count_matches_nodes(nodes: int, edges: int) -> None:
    assert edge_count_for_nodes(nodes) == edges
    assert nodes_for_edge_count(edges) == nodes


@pytest.mark.parametrize("edges", [0, 1, 3, 13, 15])
def test_edge_count_without_nodes(edges: int) -> None:
    assert nodes_for_edge_count(edges) is None


def test_alphas_nodes() -> None:
    assert Alphas.model_validate(alphas_data(nodes=4)).nodes == 4


# (case id, change to valid K=2 alphas, text expected in the message, value expected in the message)
INVALID_ALPHAS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("edge count", lambda data: data["normal"].pop(), "normal has 4 edges", "K(K+3)/2"),
    ("row length", lambda data: data["reduce"][3].pop(), "reduce[3]", "7 logits"),
    ("nan logit", _set(["normal", 2, 5], math.nan), "normal[2][5] is NaN", "diverged"),
    ("infinite logit", _set(["reduce", 0, 1], math.inf), "reduce[0][1] is Infinity", "diverged"),
    ("duplicate primitive", _set(["primitives", 1], "none"), "primitives", '["none"]'),
    ("different node counts", _set(["reduce"], [[0.0] * 8] * 9), "reduce alphas give 3", "normal alphas give 2"),
    ("unknown field", _set(["epoch"], 3), "epoch", "3"),
]


@pytest.mark.parametrize(
    ("change", "text", "value"),
    [case[1:] for case in INVALID_ALPHAS],
    ids=[case[0] for case in INVALID_ALPHAS],
)
def test_invalid_alphas_message(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], text: str, value: str
) -> None:
    data = alphas_data()
    change(data)
    path = tmp_path / "alphas.json"
    # json.dumps writes NaN and Infinity, which Python's json module reads back.
    path.write_text(json.dumps(data))

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    message = str(raised.value)
    assert str(path) in message
    assert text in message
    assert value in message


def test_load_alphas_round_trip(tmp_path: Path) -> None:
    data = alphas_data(nodes=3)
    data["normal"][4][2] = 1.5
    path = write_json(tmp_path / "alphas.json", data)

    alphas = load_alphas(path)

    assert alphas.normal[4][2] == 1.5
    assert alphas.nodes == 3


def search_option_names() -> set[str]:
    """Return the option names of `kdarts search`, e.g. {"--seed", "--epochs", ...}."""
    import typer

    from kdarts.cli import app

    search = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    return {name for parameter in search.params for name in parameter.opts}


def diverged_alphas_message(tmp_path: Path) -> str:
    data = alphas_data(nodes=4)
    data["normal"] = [[math.nan] * len(DARTS_PRIMITIVES) for _ in data["normal"]]
    data["reduce"][3][1] = -math.inf
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps(data))

    with pytest.raises(PlanError) as raised:
        load_alphas(path)
    return str(raised.value)


def test_diverged_alphas_counted_once(tmp_path: Path) -> None:
    message = diverged_alphas_message(tmp_path)

    assert "113 logits are not finite numbers" in message
    assert "normal[0][0] is NaN" in message
    assert message.count("the search diverged") == 1


def test_diverged_alphas_advice_names_real_options(tmp_path: Path) -> None:
    from kdarts.search.config import SearchConfig

    message = diverged_alphas_message(tmp_path)
    options = set(re.findall(r"--[a-z][a-z-]*", message))

    assert options == {"--seed"}
    assert options <= search_option_names()
    assert "kdarts.search.config.SearchConfig" in message
    assert "arch_learning_rate" in SearchConfig.model_fields
    assert "learning_rate" in SearchConfig.model_fields


def test_one_non_finite_logit_is_singular(tmp_path: Path) -> None:
    data = alphas_data()
    data["reduce"][1][0] = math.inf
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps(data))

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    assert "1 logit is not a finite number: reduce[1][0] is Infinity." in str(raised.value)


def test_wrong_primitives_length_is_one_problem(tmp_path: Path) -> None:
    data = alphas_data(nodes=2)
    data["primitives"] = data["primitives"][:7]
    path = write_json(tmp_path / "alphas.json", data)

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    message = str(raised.value)
    assert "primitives lists 7 names, but every row of normal and reduce has 8 logits" in message
    assert "normal[0]" not in message
    assert message.count("logit") == 2


def test_repeated_row_length_problem_lists_rows(tmp_path: Path) -> None:
    data = alphas_data(nodes=2)
    for row in (data["normal"][1], data["normal"][4], data["reduce"][2]):
        row.pop()
    path = write_json(tmp_path / "alphas.json", data)

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    message = str(raised.value)
    assert message.count("Write one logit per primitive") == 1
    assert "normal[1] has 7 logits" in message
    assert "The same applies to 2 more fields: normal[4] and reduce[2]." in message


def test_unknown_operation_on_many_edges_is_said_once(tmp_path: Path) -> None:
    data = plan_data()
    data["primitives"] = ["none", "sep_conv_3x3", "skip_connect", "dil_conv_3x3"]
    path = write_json(tmp_path / "plan.json", data)

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    message = str(raised.value)
    assert message.count("which is not in primitives") == 1
    assert 'reduce.edges[0].operation is "max_pool_3x3"' in message
    assert "The same applies to 4 more fields: reduce.edges[1].operation, reduce.edges[3].operation" in message


def test_repeated_type_error_is_said_once(tmp_path: Path) -> None:
    data = plan_data()
    for edge in data["normal"]["edges"]:
        edge["input"] = "0"
    path = write_json(tmp_path / "plan.json", data)

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    message = str(raised.value)
    assert message.count("Input should be a valid integer") == 1
    assert "7 more fields" in message
    assert "normal.edges[1].input" in message
    assert "normal.edges[7].input" in message


@pytest.mark.parametrize(
    ("provenance", "expected"),
    [
        ({"seed": True}, "provenance.seed: Input should be a valid integer, got true."),
        ({"epochs": False}, "provenance.epochs: Input should be a valid integer, got false."),
        ({"val_accuracy": True}, "provenance.val_accuracy: Input should be a valid number, got true."),
        ({"dataset": False}, "provenance.dataset: Input should be a valid string, got false."),
        ({"colour": None}, "provenance.colour is not a known field (value null)."),
    ],
)
def test_messages_show_json_values(tmp_path: Path, provenance: dict[str, Any], expected: str) -> None:
    data = plan_data()
    data["provenance"] = provenance
    path = write_json(tmp_path / "plan.json", data)

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert expected in str(raised.value)
    assert "True" not in str(raised.value)
    assert "False" not in str(raised.value)
    assert "None" not in str(raised.value)
