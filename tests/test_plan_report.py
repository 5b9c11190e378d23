"""Tests of plan reports, text formatting and cell diagrams."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from kdarts.errors import PlanError
from kdarts.plan import Plan, Provenance, draw_plan, format_plan, load_plan, plan_from_genotype, plan_report
from kdarts.plan.draw import image_format
from kdarts.plan.report import unused_nodes

DATA_DIR = Path(__file__).parent / "data" / "plans"

# A normal cell with 3 skip connections out of 8 edges, as in collapsed DARTS searches.
SKIP_HEAVY = plan_from_genotype(
    "Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 1), "
    "('sep_conv_3x3', 0), ('dil_conv_3x3', 2), ('sep_conv_5x5', 1), ('avg_pool_3x3', 3)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
PARAMETER_FREE = plan_from_genotype(
    "Genotype(normal=[('max_pool_3x3', 0), ('avg_pool_3x3', 1), ('skip_connect', 0), ('max_pool_3x3', 2)], "
    "normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3])"
)

DARTS_V2_GENOTYPE = (DATA_DIR / "darts_v2_genotype.txt").read_text()


def with_concat(normal_concat: str, reduce_concat: str = "range(2, 6)") -> Plan:
    """Return DARTS_V2 with other concat lists, written as genotype expressions."""
    text = DARTS_V2_GENOTYPE.replace("normal_concat=range(2, 6)", f"normal_concat={normal_concat}")
    return plan_from_genotype(text.replace("reduce_concat=range(2, 6)", f"reduce_concat={reduce_concat}"))


@pytest.fixture(name="darts_v2")
def fixture_darts_v2() -> Plan:
    return load_plan(DATA_DIR / "darts_v2_plan.json")


def test_histogram_of_darts_v2(darts_v2: Plan) -> None:
    report = plan_report(darts_v2)

    assert report.nodes == 4
    assert report.normal.operation_counts == {"skip_connect": 2, "sep_conv_3x3": 5, "dil_conv_3x3": 1}
    assert report.reduce.operation_counts == {"max_pool_3x3": 5, "skip_connect": 3}
    assert report.normal.edges == 8
    assert report.normal.skip_connections == 2
    assert report.reduce.parameter_free_edges == 8


def test_histogram_follows_primitive_order(darts_v2: Plan) -> None:
    report = plan_report(darts_v2)

    assert list(report.normal.operation_counts) == ["skip_connect", "sep_conv_3x3", "dil_conv_3x3"]


def test_darts_v2_has_no_warnings(darts_v2: Plan) -> None:
    assert plan_report(darts_v2).warnings == []


def test_skip_collapse_warning() -> None:
    report = plan_report(SKIP_HEAVY)

    assert len(report.warnings) == 1
    assert "collapsed into skip connections" in report.warnings[0]
    assert "3 of 8 edges" in report.warnings[0]


def test_skip_limit_is_configurable(darts_v2: Plan) -> None:
    assert plan_report(SKIP_HEAVY, max_skip_connections=3).warnings == []
    assert len(plan_report(darts_v2, max_skip_connections=1).warnings) == 1


def test_reduce_cell_skips_do_not_warn(darts_v2: Plan) -> None:
    # The skip connection limit applies to the normal cell only.
    report = plan_report(darts_v2, max_skip_connections=2)

    assert report.reduce.skip_connections == 3
    assert report.warnings == []


def test_parameter_free_warning() -> None:
    warnings = plan_report(PARAMETER_FREE).warnings

    assert len(warnings) == 1
    assert "only parameter-free operations" in warnings[0]


def test_negative_skip_limit_is_rejected(darts_v2: Plan) -> None:
    with pytest.raises(PlanError) as raised:
        plan_report(darts_v2, max_skip_connections=-1)

    assert "-1" in str(raised.value)


def test_format_plan_lists_nodes(darts_v2: Plan) -> None:
    text = format_plan(darts_v2)

    assert "normal cell: 4 nodes, output c_{k} = concat of nodes 0, 1, 2, 3" in text
    assert "  node 3 = skip_connect(c_{k-2}) + dil_conv_3x3(node 0)" in text
    assert "  operations: max_pool_3x3 x5, skip_connect x3" in text
    assert "warnings: none" in text


def test_format_plan_shows_warnings() -> None:
    text = format_plan(SKIP_HEAVY)

    assert "warnings:\n  - normal cell collapsed into skip connections" in text


def test_format_plan_shows_provenance(darts_v2: Plan) -> None:
    plan = darts_v2.model_copy(update={"provenance": Provenance(dataset="cifar10", seed=2)})

    assert "provenance: dataset=cifar10, seed=2" in format_plan(plan)


def assert_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_draw_writes_png(tmp_path: Path, darts_v2: Plan) -> None:
    directory = tmp_path / "drawings"
    directory.mkdir()
    path = directory / "cells.png"

    draw_plan(darts_v2, path)

    width, height = assert_png(path)
    assert width > 400
    assert height > 400
    assert sorted(item.name for item in directory.iterdir()) == ["cells.png"]


def test_draw_two_node_plan(tmp_path: Path) -> None:
    path = tmp_path / "small.png"

    draw_plan(PARAMETER_FREE, path)

    width, height = assert_png(path)
    assert width > 0
    assert height > 0


def test_draw_into_missing_directory(tmp_path: Path, darts_v2: Plan) -> None:
    path = tmp_path / "absent" / "cells.png"

    with pytest.raises(PlanError) as raised:
        draw_plan(darts_v2, path)

    assert str(path) in str(raised.value)


def test_unused_nodes_of_darts_v2(darts_v2: Plan) -> None:
    assert unused_nodes(darts_v2.normal) == []
    assert unused_nodes(darts_v2.reduce) == []


def test_unused_last_node() -> None:
    # DARTS_V2's node 5 feeds no other node, so leaving it out of concat leaves it unused.
    assert unused_nodes(with_concat("range(2, 5)").normal) == [5]


def test_node_used_by_later_node_is_kept() -> None:
    # DARTS_V2's normal node 5 takes node 2 as input, so node 2 reaches the output through node 5.
    assert unused_nodes(with_concat("[3, 4, 5]").normal) == []


def test_unused_nodes_are_transitive() -> None:
    # Reduce node 2 feeds only nodes 3, 4 and 5. With concat [5], node 5 keeps node 2, and
    # nodes 3 and 4 feed nothing that reaches the output.
    assert unused_nodes(with_concat("range(2, 6)", "[5]").reduce) == [3, 4]


def test_unused_node_warning() -> None:
    warnings = plan_report(with_concat("range(2, 5)")).warnings

    assert len(warnings) == 1
    assert warnings[0].startswith("normal cell: node 3 (index 5 in the plan file and genotype) never reaches")
    assert "normal_concat=range(2, 6)" in warnings[0]


def test_unused_nodes_warning_plural() -> None:
    warnings = plan_report(with_concat("range(2, 6)", "[5]")).warnings

    assert len(warnings) == 1
    assert warnings[0].startswith("reduce cell: nodes 1, 2 (indices 3, 4 in the plan file and genotype) never reach")


def test_format_plan_shows_unused_node() -> None:
    text = format_plan(with_concat("range(2, 5)"))

    assert "warnings: none" not in text
    assert "  - normal cell: node 3 (index 5" in text


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.png", "png"), ("a.PNG", "png"), ("a.svg", "svg"), ("a.pdf", "pdf"), ("a.jpg", "jpeg"), ("a.JPEG", "jpeg")],
)
def test_image_format_follows_suffix(name: str, expected: str) -> None:
    assert image_format(name) == expected


def test_draw_writes_svg(tmp_path: Path, darts_v2: Plan) -> None:
    path = tmp_path / "cells.svg"

    draw_plan(darts_v2, path)

    text = path.read_text()
    assert text.startswith("<?xml")
    assert "<svg" in text


def test_draw_writes_pdf(tmp_path: Path, darts_v2: Plan) -> None:
    path = tmp_path / "cells.pdf"

    draw_plan(darts_v2, path)

    assert path.read_bytes().startswith(b"%PDF-")


@pytest.mark.parametrize(("name", "expected"), [("cells.gif", "the suffix .gif"), ("cells", "no suffix")])
def test_draw_rejects_unknown_suffix(tmp_path: Path, darts_v2: Plan, name: str, expected: str) -> None:
    path = tmp_path / name

    with pytest.raises(PlanError) as raised:
        draw_plan(darts_v2, path)

    message = str(raised.value)
    assert str(path) in message
    assert expected in message
    assert ".png, .svg, .pdf, .jpg or .jpeg" in message
    assert not path.exists()
