"""Tests of NNI export conversion and of convert_plan's format detection.

The fixtures follow the NNI source. nni1_darts_v2_names.json is DARTS_V2 as NNI 1.6 to 2.x
export it, with operation names, chosen input keys and [] on dropped edges.
nni1_mixed_onehot.json is another architecture as NNI 1.2 to 1.5 export it, with one-hot lists.
nni3_darts_v2.json is DARTS_V2 as NNI 3.0's DARTS space exports it, with the same choices as
the darts-v2 model in NNI's nasnet.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdarts.errors import PlanError
from kdarts.plan import DARTS_PRIMITIVES, Plan, convert_plan, plan_from_genotype, plan_from_nni, save_plan

DATA_DIR = Path(__file__).parent / "data" / "plans"

DARTS_V2 = plan_from_genotype((DATA_DIR / "darts_v2_genotype.txt").read_text())

MIXED_NORMAL = [
    ("sep_conv_5x5", 0),
    ("dil_conv_5x5", 1),
    ("avg_pool_3x3", 1),
    ("sep_conv_3x3", 2),
    ("skip_connect", 0),
    ("dil_conv_3x3", 3),
    ("sep_conv_3x3", 2),
    ("max_pool_3x3", 4),
]
MIXED_REDUCE = [
    ("max_pool_3x3", 0),
    ("avg_pool_3x3", 1),
    ("max_pool_3x3", 0),
    ("skip_connect", 2),
    ("avg_pool_3x3", 1),
    ("dil_conv_5x5", 3),
    ("skip_connect", 2),
    ("sep_conv_5x5", 4),
]


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((DATA_DIR / name).read_text())


def pairs(plan: Plan, cell_name: str) -> list[tuple[str, int]]:
    return [(edge.operation, edge.input) for edge in getattr(plan, cell_name).edges]


def node_sets(plan: Plan, cell_name: str) -> list[set[tuple[str, int]]]:
    """Return each node's edges as a set, since NNI 1.x lists a node's edges in input order."""
    cell = getattr(plan, cell_name)
    return [{(edge.operation, edge.input) for edge in cell.node_edges(node)} for node in range(2, cell.nodes + 2)]


def test_nni1_names_export_is_darts_v2() -> None:
    plan = plan_from_nni(load_fixture("nni1_darts_v2_names.json"))

    assert node_sets(plan, "normal") == node_sets(DARTS_V2, "normal")
    assert node_sets(plan, "reduce") == node_sets(DARTS_V2, "reduce")
    assert plan.normal.concat == [2, 3, 4, 5]
    assert plan.primitives == list(DARTS_PRIMITIVES)


def test_nni1_edges_in_input_order() -> None:
    plan = plan_from_nni(load_fixture("nni1_darts_v2_names.json"))

    assert pairs(plan, "normal")[4:6] == [("skip_connect", 0), ("sep_conv_3x3", 1)]


def test_nni1_provenance_names_source() -> None:
    plan = plan_from_nni(load_fixture("nni1_darts_v2_names.json"))

    assert plan.provenance is not None
    assert plan.provenance.source == "NNI 1.x DARTS export"


def test_nni1_onehot_export() -> None:
    plan = plan_from_nni(load_fixture("nni1_mixed_onehot.json"))

    assert pairs(plan, "normal") == MIXED_NORMAL
    assert pairs(plan, "reduce") == MIXED_REDUCE


def test_nni1_integer_choices() -> None:
    # NNI 1.6+ writes indices when the LayerChoice candidates have no names, as in NNI 1.2-1.5's example.
    data = load_fixture("nni1_darts_v2_names.json")
    data["normal_n5_p2"] = 5
    data["normal_n5_switch"] = [0, 2]

    plan = plan_from_nni(data)

    assert plan.normal.node_edges(5)[1].operation == "dil_conv_3x3"
    assert plan.normal.node_edges(5)[1].input == 2


def test_nni1_darts_style_names() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data["normal_n2_p0"] = "sep_conv_5x5"
    data["normal_n2_p1"] = ["DilConv5x5"]

    plan = plan_from_nni(data)

    assert pairs(plan, "normal")[:2] == [("sep_conv_5x5", 0), ("dil_conv_5x5", 1)]


def test_nni1_ignores_operation_of_dropped_edge() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data["normal_n3_p2"] = "none"

    plan = plan_from_nni(data)

    assert node_sets(plan, "normal") == node_sets(DARTS_V2, "normal")


def test_nni1_two_nodes() -> None:
    data = {key: value for key, value in load_fixture("nni1_darts_v2_names.json").items() if "_n4_" not in key}
    data = {key: value for key, value in data.items() if "_n5_" not in key}

    plan = plan_from_nni(data)

    assert plan.nodes == 2
    assert plan.reduce.concat == [2, 3]


def test_nni3_export_is_darts_v2() -> None:
    plan = plan_from_nni(load_fixture("nni3_darts_v2.json"))

    assert plan.normal == DARTS_V2.normal
    assert plan.reduce == DARTS_V2.reduce
    assert plan.provenance is not None
    assert plan.provenance.source == "NNI 2.x/3.x DARTS export"


def test_nni28_integer_inputs_and_space_settings() -> None:
    # NNI 2.8 writes a cell input as an int, and the keys width and depth appear when searched.
    data: dict[str, Any] = {
        key: value[0] if key.split("/")[1].startswith("input") else value
        for key, value in load_fixture("nni3_darts_v2.json").items()
    }
    data["width"] = 16
    data["depth"] = 8

    plan = plan_from_nni(data)

    assert plan.normal == DARTS_V2.normal
    assert plan.provenance is not None
    assert plan.provenance.settings == {"width": 16, "depth": 8}


def test_nni1_missing_keys_are_listed() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    del data["normal_n3_switch"]
    del data["reduce_n4_p3"]

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "normal_n3_switch" in str(raised.value)
    assert "reduce_n4_p3" in str(raised.value)


def test_nni1_unknown_keys_are_listed() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data["normal_n3_p5"] = "maxpool"
    data["learning_rate"] = 0.1

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "Unknown keys: learning_rate, normal_n3_p5" in str(raised.value)


def test_huge_node_index_is_rejected() -> None:
    data = load_fixture("nni3_darts_v2.json")
    data["normal/op_100000_0"] = "skip_connect"

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "normal/op_100000_0 names node 100000" in str(raised.value)


def test_nni1_missing_node_is_listed() -> None:
    data = {key: value for key, value in load_fixture("nni1_darts_v2_names.json").items() if "reduce_n5" not in key}

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "reduce_n5_switch" in str(raised.value)


def test_nni3_missing_and_unknown_keys_are_listed() -> None:
    data = load_fixture("nni3_darts_v2.json")
    del data["reduce/input_4_1"]
    data["normal/op_3_2"] = "skip_connect"

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "Missing keys: reduce/input_4_1" in str(raised.value)
    assert "Unknown keys: normal/op_3_2" in str(raised.value)


def test_nni1_none_on_kept_edge() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data["reduce_n3_p2"] = "none"

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "reduce_n3_p2" in str(raised.value)
    assert "'none'" in str(raised.value)


def test_nni3_none_operation() -> None:
    # NNI 2.8's DARTS space lists 'none' among its candidates, so its exports can contain it.
    data = load_fixture("nni3_darts_v2.json")
    data["normal/op_4_1"] = "none"

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "normal/op_4_1" in str(raised.value)
    assert "'none'" in str(raised.value)


def test_unknown_operation_lists_known_ones() -> None:
    data = load_fixture("nni3_darts_v2.json")
    data["reduce/op_2_0"] = "conv_7x1_1x7"

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert '"conv_7x1_1x7"' in str(raised.value)
    assert "'sep_conv_5x5'" in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("normal_n4_switch", ["normal_n4_p0"], "exactly 2", id="one input"),
        pytest.param("normal_n4_switch", [True, True, True, False], "exactly 2", id="three inputs"),
        pytest.param("normal_n4_switch", [True, True], "multi-hot list of 2", id="multi-hot length"),
        pytest.param("normal_n4_switch", ["normal_n4_p0", "normal_n3_p1"], '"normal_n3_p1"', id="foreign key"),
        pytest.param("normal_n4_switch", [0, 7], "[7]", id="input out of range"),
        pytest.param("normal_n4_p0", [], "chooses no operation", id="kept edge without operation"),
        pytest.param("normal_n4_p0", [True] + [False] * 7, "8 entries", id="one-hot with none"),
        pytest.param("normal_n4_p0", [True, True] + [False] * 5, "2 operations", id="two-hot"),
        pytest.param("normal_n4_p0", 9, "out of range", id="index out of range"),
        pytest.param("normal_n4_p0", {"op": "maxpool"}, '{"op": "maxpool"}', id="object"),
    ],
)
def test_nni1_invalid_values(key: str, value: Any, expected: str) -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data[key] = value

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert key in str(raised.value)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("normal/input_3_1", [3], "[3]", id="input not below node"),
        pytest.param("normal/input_3_1", [0, 1], "[0, 1]", id="two inputs"),
        pytest.param("normal/input_3_1", "1", '"1"', id="string input"),
        pytest.param("reduce/op_5_0", 3, "3", id="operation index"),
    ],
)
def test_nni3_invalid_values(key: str, value: Any, expected: str) -> None:
    data = load_fixture("nni3_darts_v2.json")
    data[key] = value

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert key in str(raised.value)
    assert expected in str(raised.value)


def test_mixed_nni_versions_are_rejected() -> None:
    data = {**load_fixture("nni1_darts_v2_names.json"), **load_fixture("nni3_darts_v2.json")}

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "mixes NNI 1.x keys" in str(raised.value)


def test_no_nni_keys() -> None:
    with pytest.raises(PlanError) as raised:
        plan_from_nni({"epochs": 50, "lr": 0.025})

    assert "found no NNI DARTS keys among epochs, lr" in str(raised.value)


def test_convert_auto_nni() -> None:
    plan = convert_plan(DATA_DIR / "nni3_darts_v2.json")

    assert plan.normal == DARTS_V2.normal


def test_convert_auto_genotype() -> None:
    plan = convert_plan(DATA_DIR / "darts_v2_genotype.txt")

    assert plan.normal == DARTS_V2.normal
    assert plan.provenance is not None
    assert plan.provenance.source == "DARTS genotype file darts_v2_genotype.txt"


def test_convert_explicit_formats() -> None:
    assert convert_plan(DATA_DIR / "nni1_mixed_onehot.json", "nni").nodes == 4
    assert convert_plan(DATA_DIR / "darts_v2_genotype.txt", "genotype").reduce == DARTS_V2.reduce


def test_convert_unwraps_single_top_model(tmp_path: Path) -> None:
    path = tmp_path / "top.json"
    path.write_text(json.dumps([load_fixture("nni3_darts_v2.json")]))

    assert convert_plan(path).reduce == DARTS_V2.reduce


def test_convert_rejects_several_top_models(tmp_path: Path) -> None:
    path = tmp_path / "top.json"
    path.write_text(json.dumps([load_fixture("nni3_darts_v2.json")] * 2))

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert "list of 2 entries" in str(raised.value)


def test_convert_errors_name_file(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    data = load_fixture("nni3_darts_v2.json")
    del data["normal/op_2_0"]
    path.write_text(json.dumps(data))

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert str(path) in str(raised.value)
    assert "normal/op_2_0" in str(raised.value)


def test_convert_rejects_plan_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(DARTS_V2, path)

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert "looks like a kdarts plan, not an NNI export" in str(raised.value)


def test_convert_rejects_alphas(tmp_path: Path) -> None:
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps({"primitives": ["skip_connect"], "normal": [[0.0]] * 2, "reduce": [[0.0]] * 2}))

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert "kdarts plan derive" in str(raised.value)


def test_convert_undetectable_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("sep_conv_3x3 everywhere")

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert str(path) in str(raised.value)
    assert "--from" in str(raised.value)


def test_convert_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('{"normal/op_2_0": "sep_conv_3x3",')

    with pytest.raises(PlanError) as raised:
        convert_plan(path, "nni")

    assert str(path) in str(raised.value)
    assert "not valid JSON" in str(raised.value)


def test_convert_genotype_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "genotype.txt"
    path.write_text("Genotype(normal=[('sep_conv_3x3', 0)])")

    with pytest.raises(PlanError) as raised:
        convert_plan(path)

    assert str(path) in str(raised.value)
    assert "normal_concat" in str(raised.value)


def test_convert_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as raised:
        convert_plan(tmp_path / "absent.json")

    assert "not found" in str(raised.value)


def test_nni_message_shows_json_booleans() -> None:
    data = load_fixture("nni1_darts_v2_names.json")
    data["normal_n4_p0"] = [True, True] + [False] * 5

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "normal_n4_p0 is [true, true, false, false, false, false, false]" in str(raised.value)


def test_nni_message_shows_json_null() -> None:
    data = load_fixture("nni3_darts_v2.json")
    data["normal/input_3_1"] = None

    with pytest.raises(PlanError) as raised:
        plan_from_nni(data)

    assert "normal/input_3_1 is null" in str(raised.value)


def test_forced_nni_on_genotype_names_genotype() -> None:
    path = DATA_DIR / "darts_v2_genotype.txt"

    with pytest.raises(PlanError) as raised:
        convert_plan(path, "nni")

    message = str(raised.value)
    assert f"'{path}' looks like a DARTS genotype string, not an NNI export (JSON)." in message
    assert "--from genotype" in message
    assert "Fix the JSON syntax" not in message


def test_forced_nni_on_plan_names_plan() -> None:
    path = DATA_DIR / "darts_v2_plan.json"

    with pytest.raises(PlanError) as raised:
        convert_plan(path, "nni")

    assert "looks like a kdarts plan, not an NNI export" in str(raised.value)


def test_forced_genotype_on_nni_names_nni() -> None:
    path = DATA_DIR / "nni1_darts_v2_names.json"

    with pytest.raises(PlanError) as raised:
        convert_plan(path, "genotype")

    assert "looks like an NNI DARTS export, not a genotype string" in str(raised.value)
    assert "--from nni" in str(raised.value)


def test_forced_genotype_on_alphas_names_derive(tmp_path: Path) -> None:
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps({"primitives": ["skip_connect"], "normal": [[0.0]] * 2, "reduce": [[0.0]] * 2}))

    with pytest.raises(PlanError) as raised:
        convert_plan(path, "genotype")

    assert "looks like an alphas file" in str(raised.value)
    assert f"kdarts plan derive {path}" in str(raised.value)
