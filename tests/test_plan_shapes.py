"""Tests of input-kind detection and of the hints that the plan and alphas loaders give for the wrong kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdarts.errors import PlanError
from kdarts.plan import DARTS_PRIMITIVES, load_alphas, load_plan
from kdarts.plan.model import edge_count_for_nodes
from kdarts.plan.shapes import json_kind, text_kind, wrong_kind_message

DATA_DIR = Path(__file__).parent / "data" / "plans"


def alphas_data(nodes: int = 4) -> dict[str, Any]:
    rows = [[0.1] * len(DARTS_PRIMITIVES) for _ in range(edge_count_for_nodes(nodes))]
    return {"primitives": list(DARTS_PRIMITIVES), "normal": rows, "reduce": rows}


def fixture_data(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text())


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("darts_v2_plan.json", "plan"),
        ("nni1_darts_v2_names.json", "nni"),
        ("nni1_mixed_onehot.json", "nni"),
        ("nni3_darts_v2.json", "nni"),
    ],
)
def test_json_kind_of_fixtures(name: str, kind: str) -> None:
    assert json_kind(fixture_data(name)) == kind


def test_json_kind_of_alphas() -> None:
    assert json_kind(alphas_data()) == "alphas"


def test_json_kind_of_nni_top_models() -> None:
    assert json_kind([fixture_data("nni3_darts_v2.json")]) == "nni"


@pytest.mark.parametrize("data", [{"epochs": 3}, [1, 2], "text", None, {"primitives": [], "normal": 3}])
def test_json_kind_of_other_data(data: Any) -> None:
    assert json_kind(data) is None


def test_text_kind_of_genotype() -> None:
    assert text_kind((DATA_DIR / "darts_v2_genotype.txt").read_text()) == "genotype"


def test_text_kind_of_prose() -> None:
    assert text_kind("sep_conv_3x3 everywhere") is None


def test_wrong_kind_message_quotes_path_for_shell() -> None:
    message = wrong_kind_message(Path("my runs/alphas.json"), "alphas", "plan")

    assert "`kdarts plan derive 'my runs/alphas.json' -o plan.json`" in message


# (fixture name or "alphas", expected description, expected command)
PLAN_LOADER_CASES = [
    ("alphas", "looks like an alphas file", "kdarts plan derive"),
    ("nni1_darts_v2_names.json", "looks like an NNI DARTS export, not a plan", "kdarts plan convert"),
    ("nni3_darts_v2.json", "looks like an NNI DARTS export, not a plan", "kdarts plan convert"),
    ("darts_v2_genotype.txt", "looks like a DARTS genotype string, not a plan", "kdarts plan convert"),
]


@pytest.mark.parametrize(("source", "description", "command"), PLAN_LOADER_CASES)
def test_load_plan_names_other_kind(tmp_path: Path, source: str, description: str, command: str) -> None:
    if source == "alphas":
        path = tmp_path / "alphas.json"
        path.write_text(json.dumps(alphas_data()))
    else:
        path = DATA_DIR / source

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    message = str(raised.value)
    assert description in message
    assert f"{command} {path}" in message
    assert "not a known field" not in message


def test_load_plan_names_nni_top_models(tmp_path: Path) -> None:
    path = tmp_path / "top.json"
    path.write_text(json.dumps([fixture_data("nni3_darts_v2.json")]))

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert "looks like an NNI DARTS export" in str(raised.value)


def test_load_alphas_names_plan() -> None:
    path = DATA_DIR / "darts_v2_plan.json"

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    assert "looks like a kdarts plan, not an alphas file" in str(raised.value)
    assert f"kdarts plan show {path}" in str(raised.value)


def test_load_alphas_names_nni_export() -> None:
    path = DATA_DIR / "nni3_darts_v2.json"

    with pytest.raises(PlanError) as raised:
        load_alphas(path)

    assert "looks like an NNI DARTS export, not an alphas file" in str(raised.value)
    assert f"kdarts plan convert {path}" in str(raised.value)


def test_load_plan_broken_json_keeps_syntax_message(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"format_version": 1,')

    with pytest.raises(PlanError) as raised:
        load_plan(path)

    assert "is not valid JSON" in str(raised.value)
    assert "Fix the JSON syntax" in str(raised.value)
