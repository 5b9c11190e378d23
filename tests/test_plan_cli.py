"""Tests of the `kdarts plan` commands through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from kdarts.plan import DARTS_PRIMITIVES, load_plan, plan_to_genotype
from kdarts.plan.cli import plan_app
from kdarts.plan.model import edge_count_for_nodes

DATA_DIR = Path(__file__).parent / "data" / "plans"
PLAN_FILE = DATA_DIR / "darts_v2_plan.json"

runner = CliRunner()


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(plan_app, [])

    assert "convert" in result.stdout
    assert "derive" in result.stdout


def test_convert_nni_export(tmp_path: Path) -> None:
    output = tmp_path / "plan.json"

    result = runner.invoke(plan_app, ["convert", str(DATA_DIR / "nni3_darts_v2.json"), "-o", str(output)])

    assert result.exit_code == 0
    assert f"wrote plan {output}" in result.stdout
    assert load_plan(output).normal == load_plan(PLAN_FILE).normal


def test_convert_from_genotype(tmp_path: Path) -> None:
    output = tmp_path / "plan.json"

    result = runner.invoke(
        plan_app,
        ["convert", str(DATA_DIR / "darts_v2_genotype.txt"), "--output", str(output), "--from", "genotype"],
    )

    assert result.exit_code == 0
    assert load_plan(output).reduce == load_plan(PLAN_FILE).reduce


def test_convert_wrong_format_fails_cleanly(tmp_path: Path) -> None:
    output = tmp_path / "plan.json"

    result = runner.invoke(
        plan_app, ["convert", str(DATA_DIR / "darts_v2_genotype.txt"), "-o", str(output), "--from", "nni"]
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "darts_v2_genotype.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_convert_rejects_unknown_format(tmp_path: Path) -> None:
    result = runner.invoke(
        plan_app, ["convert", str(DATA_DIR / "nni3_darts_v2.json"), "-o", str(tmp_path / "p.json"), "--from", "x"]
    )

    assert result.exit_code == 2


def test_derive_from_alphas(tmp_path: Path) -> None:
    rows = [[0.0] * len(DARTS_PRIMITIVES) for _ in range(edge_count_for_nodes(3))]
    rows[0][DARTS_PRIMITIVES.index("sep_conv_5x5")] = 2.0
    alphas = tmp_path / "alphas.json"
    alphas.write_text(json.dumps({"primitives": list(DARTS_PRIMITIVES), "normal": rows, "reduce": rows}))
    output = tmp_path / "plan.json"

    result = runner.invoke(plan_app, ["derive", str(alphas), "-o", str(output)])

    plan = load_plan(output)
    assert result.exit_code == 0
    assert "3 nodes per cell" in result.stdout
    assert plan.normal.edges[0].operation == "sep_conv_5x5"
    assert plan.provenance is not None
    assert plan.provenance.source == "derived from alphas file alphas.json"


def test_derive_invalid_alphas(tmp_path: Path) -> None:
    alphas = tmp_path / "alphas.json"
    alphas.write_text(json.dumps({"primitives": ["skip_connect"], "normal": [[0.0]] * 4, "reduce": [[0.0]] * 5}))

    result = runner.invoke(plan_app, ["derive", str(alphas), "-o", str(tmp_path / "plan.json")])

    assert result.exit_code == 1
    assert "normal has 4 edges" in result.stderr
    assert str(alphas) in result.stderr


def test_show_prints_cells() -> None:
    result = runner.invoke(plan_app, ["show", str(PLAN_FILE)])

    assert result.exit_code == 0
    assert "node 3 = skip_connect(c_{k-2}) + dil_conv_3x3(node 0)" in result.stdout
    assert "warnings: none" in result.stdout


def test_show_max_skip_warns() -> None:
    result = runner.invoke(plan_app, ["show", str(PLAN_FILE), "--max-skip", "1"])

    assert result.exit_code == 0
    assert "collapsed into skip connections" in result.stdout


def test_show_missing_plan() -> None:
    result = runner.invoke(plan_app, ["show", "absent-plan.json"])

    assert result.exit_code == 1
    assert result.stderr == "error: plan file not found: 'absent-plan.json'. Check the path.\n"


def test_show_invalid_plan_is_one_line(tmp_path: Path) -> None:
    data = json.loads(PLAN_FILE.read_text())
    data["normal"]["edges"][5]["input"] = 7
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))

    result = runner.invoke(plan_app, ["show", str(path)])

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "normal.edges[5].input is 7" in result.stderr


def test_export_genotype() -> None:
    result = runner.invoke(plan_app, ["export", str(PLAN_FILE), "--to", "genotype"])

    assert result.exit_code == 0
    assert result.stdout == plan_to_genotype(load_plan(PLAN_FILE)) + "\n"


def test_draw_writes_png(tmp_path: Path) -> None:
    output = tmp_path / "cells.png"

    result = runner.invoke(plan_app, ["draw", str(PLAN_FILE), "-o", str(output)])

    assert result.exit_code == 0
    with Image.open(output) as image:
        assert image.format == "PNG"


def test_show_nni_export_is_one_hint() -> None:
    path = DATA_DIR / "nni3_darts_v2.json"

    result = runner.invoke(plan_app, ["show", str(path)])

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "looks like an NNI DARTS export, not a plan" in result.stderr
    assert f"kdarts plan convert {path} -o plan.json" in result.stderr
    assert "not a known field" not in result.stderr


def test_show_alphas_is_one_hint(tmp_path: Path) -> None:
    rows = [[0.0] * len(DARTS_PRIMITIVES) for _ in range(edge_count_for_nodes(4))]
    alphas = tmp_path / "alphas.json"
    alphas.write_text(json.dumps({"primitives": list(DARTS_PRIMITIVES), "normal": rows, "reduce": rows}))

    result = runner.invoke(plan_app, ["show", str(alphas)])

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "looks like an alphas file" in result.stderr
    assert f"kdarts plan derive {alphas} -o plan.json" in result.stderr


def test_convert_genotype_forced_as_nni(tmp_path: Path) -> None:
    result = runner.invoke(
        plan_app, ["convert", str(DATA_DIR / "darts_v2_genotype.txt"), "-o", str(tmp_path / "p.json"), "--from", "nni"]
    )

    assert result.exit_code == 1
    assert "looks like a DARTS genotype string, not an NNI export" in result.stderr
    assert "Pass --from genotype, or --from auto" in result.stderr
    assert "Fix the JSON syntax" not in result.stderr


def test_convert_nni_forced_as_genotype(tmp_path: Path) -> None:
    source = DATA_DIR / "nni3_darts_v2.json"

    result = runner.invoke(plan_app, ["convert", str(source), "-o", str(tmp_path / "p.json"), "--from", "genotype"])

    assert result.exit_code == 1
    assert "looks like an NNI DARTS export, not a genotype string" in result.stderr
    assert "Pass --from nni, or --from auto" in result.stderr


def test_draw_jpg_writes_jpeg(tmp_path: Path) -> None:
    output = tmp_path / "z.jpg"

    result = runner.invoke(plan_app, ["draw", str(PLAN_FILE), "-o", str(output)])

    assert result.exit_code == 0
    with Image.open(output) as image:
        assert image.format == "JPEG"


def test_draw_unknown_suffix_fails_cleanly(tmp_path: Path) -> None:
    output = tmp_path / "z.bmp"

    result = runner.invoke(plan_app, ["draw", str(PLAN_FILE), "-o", str(output)])

    assert result.exit_code == 1
    assert "the suffix .bmp" in result.stderr
    assert not output.exists()


def test_show_warns_about_unused_node(tmp_path: Path) -> None:
    genotype = (DATA_DIR / "darts_v2_genotype.txt").read_text()
    source = tmp_path / "genotype.txt"
    source.write_text(genotype.replace("normal_concat=range(2, 6)", "normal_concat=range(2, 5)"))
    plan_path = tmp_path / "plan.json"
    converted = runner.invoke(plan_app, ["convert", str(source), "-o", str(plan_path)])

    result = runner.invoke(plan_app, ["show", str(plan_path)])

    assert converted.exit_code == 0
    assert result.exit_code == 0
    assert "warnings: none" not in result.stdout
    assert "normal cell: node 3 (index 5 in the plan file and genotype) never reaches the cell output" in result.stdout
