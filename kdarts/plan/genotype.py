"""Convert plans to and from genotype strings of the original DARTS code.

A genotype reads `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
reduce=[...], reduce_concat=[2, 3, 4, 5])`: (operation, input) pairs, two per intermediate
node in node order, with the same input numbering as a plan. This is the repr of the
`Genotype` namedtuple in genotypes.py of the DARTS code (github.com/quark0/darts).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from typing import Any

from kdarts.errors import PlanError
from kdarts.plan.model import CELL_NAMES, DARTS_PRIMITIVES, Cell, Plan, plan_from_data

logger = logging.getLogger(__name__)

GENOTYPE_FIELDS: tuple[str, ...] = ("normal", "normal_concat", "reduce", "reduce_concat")


def plan_to_genotype(plan: Plan) -> str:
    """Format `plan` as a DARTS genotype string with concat lists, e.g. `normal_concat=[2, 3, 4, 5]`."""
    parts: list[str] = []
    for cell_name in CELL_NAMES:
        cell: Cell = getattr(plan, cell_name)
        pairs = [(edge.operation, edge.input) for edge in cell.edges]
        parts.append(f"{cell_name}={pairs!r}")
        parts.append(f"{cell_name}_concat={list(cell.concat)!r}")
    return f"Genotype({', '.join(parts)})"


def plan_from_genotype(text: str, *, primitives: Sequence[str] = DARTS_PRIMITIVES) -> Plan:
    """Parse a DARTS genotype string into a plan whose primitive list is `primitives`.

    Accepted forms: `Genotype(normal=..., ...)`, the same call assigned to a name
    (`DARTS_V2 = Genotype(...)`), and the bare keyword list `normal=..., normal_concat=...`.
    The four fields may also be positional, in namedtuple order. A concat may be a list, a
    tuple or `range(start, stop)`. The text is parsed with `ast` and never evaluated. Edges
    keep the order of the genotype, so plan -> genotype -> plan returns an equal plan when the
    plan has no provenance, because a genotype carries none.

    Raises PlanError for a syntax error, a missing or unknown field, an operation outside
    `primitives` (the message lists the known ones), `none`, or any plan validation error.
    """
    call = _parse_genotype_call(text)
    fields = _genotype_fields(call)
    known = [name for name in primitives if name != "none"]

    plan_data: dict[str, Any] = {"primitives": list(primitives)}
    for cell_name in CELL_NAMES:
        edges = _parse_edges(fields[cell_name], cell_name, known)
        concat = _parse_concat(fields[f"{cell_name}_concat"], f"{cell_name}_concat")
        plan_data[cell_name] = {"edges": edges, "concat": concat}

    return plan_from_data(plan_data, source="genotype")


def _parse_genotype_call(text: str) -> ast.Call:
    stripped = text.strip()
    if not stripped:
        raise PlanError("the genotype is empty. Pass a string such as Genotype(normal=[...], normal_concat=...).")

    try:
        module = ast.parse(stripped, mode="exec")
    except SyntaxError as error:
        # A bare keyword list such as "normal=[...], normal_concat=..." is a syntax error on its
        # own but parses once wrapped in a call.
        try:
            module = ast.parse(f"Genotype({stripped})", mode="exec")
        except SyntaxError:
            raise PlanError(
                f"the genotype is not valid Python syntax ({error.msg}, line {error.lineno}). "
                f"Expected Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)."
            ) from error

    call = _single_call(module)
    if call is not None:
        return call
    if len(module.body) != 1:
        raise PlanError(
            f"the genotype text has {len(module.body)} statements, expected one Genotype(...) call. "
            f"Copy the one genotype you want into its own file or string."
        )
    raise PlanError(
        f"the genotype text is {_clip(ast.unparse(module.body[0]))}, not a Genotype(...) call. "
        f"Expected Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)."
    )


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _single_call(module: ast.Module) -> ast.Call | None:
    if len(module.body) != 1:
        return None
    statement = module.body[0]
    if isinstance(statement, ast.Expr):
        value = statement.value
    elif isinstance(statement, ast.Assign):
        value = statement.value
    else:
        return None
    return value if isinstance(value, ast.Call) else None


def _genotype_fields(call: ast.Call) -> dict[str, ast.expr]:
    name = ast.unparse(call.func)
    if name.split(".")[-1] != "Genotype":
        raise PlanError(f"the genotype calls {name}(...), expected Genotype(...).")

    if len(call.args) > len(GENOTYPE_FIELDS):
        raise PlanError(
            f"the genotype has {len(call.args)} positional fields, expected at most {len(GENOTYPE_FIELDS)}: "
            f"{', '.join(GENOTYPE_FIELDS)}."
        )
    fields: dict[str, ast.expr] = dict(zip(GENOTYPE_FIELDS, call.args))

    unknown: list[str] = []
    for keyword in call.keywords:
        if keyword.arg is None or keyword.arg not in GENOTYPE_FIELDS:
            unknown.append(keyword.arg or "**")
            continue
        if keyword.arg in fields:
            raise PlanError(f"the genotype sets {keyword.arg} twice. Set each field once.")
        fields[keyword.arg] = keyword.value
    if unknown:
        raise PlanError(f"the genotype has unknown fields {unknown}. Use only {', '.join(GENOTYPE_FIELDS)}.")

    missing = [field for field in GENOTYPE_FIELDS if field not in fields]
    if missing:
        raise PlanError(f"the genotype is missing {missing}. A genotype needs {', '.join(GENOTYPE_FIELDS)}.")
    return fields


def _literal(node: ast.expr, field: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError as error:
        raise PlanError(
            f"the genotype field {field} is {ast.unparse(node)!r}, which is not a literal. "
            f"Write it out as a list."
        ) from error


def _parse_edges(node: ast.expr, field: str, known: list[str]) -> list[dict[str, Any]]:
    pairs = _literal(node, field)
    if not isinstance(pairs, (list, tuple)):
        raise PlanError(f"the genotype field {field} is {pairs!r}, expected a list of (operation, input) pairs.")

    edges: list[dict[str, Any]] = []
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise PlanError(f"{field}[{index}] is {pair!r}, expected an (operation, input) pair.")
        operation, input_index = pair
        if not isinstance(operation, str):
            raise PlanError(f"{field}[{index}] operation is {operation!r}, expected an operation name.")
        if isinstance(input_index, bool) or not isinstance(input_index, int):
            raise PlanError(f"{field}[{index}] input is {input_index!r}, expected an integer.")
        if operation == "none":
            raise PlanError(
                f"{field}[{index}] operation is 'none', which removes the edge. "
                f"Every genotype edge needs a real operation, one of {known}."
            )
        if operation not in known:
            raise PlanError(f"{field}[{index}] operation {operation!r} is not a known operation. Known: {known}.")
        edges.append({"operation": operation, "input": input_index})
    return edges


def _parse_concat(node: ast.expr, field: str) -> list[int]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("range", "list"):
        if node.func.id == "list" and len(node.args) == 1 and not node.keywords:
            return _parse_concat(node.args[0], field)
        if node.func.id == "range" and 1 <= len(node.args) <= 2 and not node.keywords:
            bounds = [argument.value for argument in node.args if isinstance(argument, ast.Constant)]
            if len(bounds) == len(node.args) and all(
                isinstance(bound, int) and not isinstance(bound, bool) for bound in bounds
            ):
                return list(range(*bounds))
        raise PlanError(f"the genotype field {field} is {ast.unparse(node)!r}. Use a list or range(start, stop).")

    values = _literal(node, field)
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(value, int) and not isinstance(value, bool) for value in values
    ):
        raise PlanError(f"the genotype field {field} is {values!r}, expected a list of node indices.")
    return list(values)
