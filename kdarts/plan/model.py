"""Plan and alphas data models, their validation, and atomic JSON files.

A plan is the architecture that a DARTS search found: one normal cell and one reduction cell.
Each cell is a list of (operation, input) edges, two per intermediate node, plus the list of
nodes that the cell concatenates into its output. Inputs 0 and 1 are the cell's inputs
c_{k-2} and c_{k-1}, and input i >= 2 is intermediate node i.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kdarts import fileio
from kdarts.errors import PlanError
from kdarts.plan.shapes import FileKind, json_kind, looks_like_genotype, wrong_kind_message

logger = logging.getLogger(__name__)

DARTS_PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

PLAN_FORMAT_VERSION = 1
CELL_NAMES: tuple[str, str] = ("normal", "reduce")
EDGES_PER_NODE = 2

# Maximum length of a value shown in an error message. Longer values are cut.
_MAX_VALUE_TEXT = 80

# Maximum number of field paths that a message lists before it gives a count of the rest.
_MAX_LISTED_PATHS = 8


def edge_count_for_nodes(nodes: int) -> int:
    """Return the number of candidate edges in a searched cell with `nodes` intermediate nodes.

    Node i (counted from 2) has one candidate edge from each of its i predecessors, so
    K nodes give 2 + 3 + ... + (K + 1) = K(K + 3) / 2 edges.
    """
    return nodes * (nodes + 3) // 2


def nodes_for_edge_count(edges: int) -> int | None:
    """Return K with K(K + 3) / 2 == `edges` and K >= 1, or None when no such K exists."""
    nodes = 1
    while edge_count_for_nodes(nodes) < edges:
        nodes += 1
    if edge_count_for_nodes(nodes) == edges:
        return nodes
    return None


# A problem is a field path relative to the value being validated and a sentence fragment that
# follows the path, e.g. ("edges[5].input", "is 4, but node 4 may take inputs 0..3 only."). An
# empty path stands for the value itself, and a path of None marks a whole sentence.
Problem = tuple[str | None, str]


def _plan_value_error(problems: list[Problem]) -> PydanticCustomError:
    # The text travels through the context because a message template would read the braces
    # of names such as c_{k-2} as placeholders.
    detail = " ".join(_describe_problems([("", problem) for problem in problems]))
    return PydanticCustomError("plan_invalid", "{detail}", {"detail": detail, "problems": problems})


def _join_path(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    if path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def _join_problem(prefix: str, problem: Problem) -> str:
    path, message = problem
    if path is None:
        return f"{prefix}: {message}" if prefix else message
    full_path = _join_path(prefix, path)
    return f"{full_path} {message}" if full_path else message


def _problem_location(prefix: str, problem: Problem) -> str:
    path, _ = problem
    return prefix if path is None else _join_path(prefix, path)


def _describe_problems(located: list[tuple[str, Problem]]) -> list[str]:
    """Render (path prefix, problem) pairs as sentences, saying each repeated problem once.

    Problems with the same message, such as one bad value on many edges, become one sentence
    for the first field that lists the other affected fields.
    """
    groups: dict[tuple[bool, str], list[tuple[str, Problem]]] = {}
    for prefix, problem in located:
        path, message = problem
        groups.setdefault((path is None, message), []).append((prefix, problem))

    sentences: list[str] = []
    for members in groups.values():
        first_prefix, first_problem = members[0]
        sentence = _join_problem(first_prefix, first_problem)

        first_location = _problem_location(first_prefix, first_problem)
        others: list[str] = []
        for prefix, problem in members[1:]:
            location = _problem_location(prefix, problem)
            if location and location != first_location and location not in others:
                others.append(location)
        if others:
            sentence += f" The same applies to {count_noun(len(others), 'more field')}: {listed(others)}."
        sentences.append(sentence)
    return sentences


def count_noun(count: int, noun: str) -> str:
    """Return e.g. "1 node" or "3 nodes"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def listed(items: list[str], limit: int = _MAX_LISTED_PATHS) -> str:
    """Join `items` with commas, listing at most `limit` of them and counting the rest, e.g. "a, b and 3 more"."""
    named = items[:limit]
    if len(items) > len(named):
        return f"{', '.join(named)} and {len(items) - len(named)} more"
    if len(named) > 1:
        return f"{', '.join(named[:-1])} and {named[-1]}"
    return "".join(named)


def format_json_value(value: Any, limit: int = _MAX_VALUE_TEXT) -> str:
    """Format a value read from a JSON file as JSON text (true, null, "name", NaN), cut to `limit` characters.

    Values that JSON cannot represent, such as Python objects, fall back to their repr.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _check_names(names: list[str]) -> list[str]:
    if not names:
        raise _plan_value_error([("", "is empty. List the operation names that the search used.")])

    for index, name in enumerate(names):
        if not name:
            raise _plan_value_error([(f"[{index}]", "is an empty string. Give every primitive a name.")])

    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise _plan_value_error([
            ("", f"lists {format_json_value(duplicates)} more than once. Each primitive name must be unique.")
        ])

    return names


class Edge(BaseModel):
    """One edge of a derived cell: an operation applied to one earlier state of the cell."""

    model_config = ConfigDict(extra="forbid", strict=True)

    operation: str
    input: int = Field(ge=0, description="0 and 1 are the cell inputs c_{k-2} and c_{k-1}, and i >= 2 is node i")


class Cell(BaseModel):
    """A derived cell: edges listed node by node, exactly two per intermediate node, and the concat list."""

    model_config = ConfigDict(extra="forbid", strict=True)

    edges: list[Edge]
    concat: list[int] = Field(description="intermediate nodes (2 .. K+1) whose outputs form the cell output")

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes."""
        return len(self.edges) // EDGES_PER_NODE

    def node_edges(self, node: int) -> list[Edge]:
        """Return the two edges into intermediate node `node`, counted from 2."""
        if not 2 <= node < self.nodes + 2:
            raise IndexError(f"node {node} is out of range 2..{self.nodes + 1}")
        start = (node - 2) * EDGES_PER_NODE
        return self.edges[start : start + EDGES_PER_NODE]


class Alphas(BaseModel):
    """Architecture logits of a search: one row of logits per candidate edge and cell.

    Rows are listed node by node: node 2's inputs 0 and 1, then node 3's inputs 0, 1 and 2,
    and so on, so K intermediate nodes give K(K + 3) / 2 rows. Each row has one logit per
    entry of `primitives`, in the same order.
    """

    model_config = ConfigDict(extra="forbid")

    primitives: list[str]
    normal: list[list[float]]
    reduce: list[list[float]]

    @field_validator("primitives")
    @classmethod
    def _check_primitives(cls, primitives: list[str]) -> list[str]:
        return _check_names(primitives)

    @model_validator(mode="after")
    def _check_rows(self) -> Alphas:
        problems: list[Problem] = []
        node_counts: dict[str, int] = {}

        for cell_name in CELL_NAMES:
            rows: list[list[float]] = getattr(self, cell_name)
            nodes = nodes_for_edge_count(len(rows))
            if nodes is None:
                problems.append((
                    cell_name,
                    f"has {len(rows)} edges, but K intermediate nodes need K(K+3)/2 edges (2, 5, 9, 14, ...). "
                    f"Write one row per candidate edge, node by node.",
                ))
            else:
                node_counts[cell_name] = nodes

        problems.extend(self._row_length_problems())
        problems.extend(self._non_finite_problems())

        if len(node_counts) == 2 and node_counts["normal"] != node_counts["reduce"]:
            problems.append((
                None,
                f"The normal alphas give {count_noun(node_counts['normal'], 'intermediate node')} but the reduce "
                f"alphas give {node_counts['reduce']}. Both cells must have the same number of nodes.",
            ))

        if problems:
            raise _plan_value_error(problems)
        return self

    def _row_length_problems(self) -> list[Problem]:
        expected = len(self.primitives)
        lengths = {len(row) for cell_name in CELL_NAMES for row in getattr(self, cell_name)}
        if lengths == {expected} or not lengths:
            return []

        # When every row has the same wrong length, the primitives list is the likelier mistake,
        # so one problem names it instead of one problem per row.
        if len(lengths) == 1:
            (length,) = lengths
            return [(
                "primitives",
                f"lists {count_noun(expected, 'name')}, but every row of normal and reduce has "
                f"{count_noun(length, 'logit')}. Fix the primitives list, "
                f"or write one logit per primitive in each row.",
            )]

        return [
            (
                f"{cell_name}[{edge_index}]",
                f"has {count_noun(len(row), 'logit')}, but primitives lists {count_noun(expected, 'name')}. "
                f"Write one logit per primitive.",
            )
            for cell_name in CELL_NAMES
            for edge_index, row in enumerate(getattr(self, cell_name))
            if len(row) != expected
        ]

    def _non_finite_problems(self) -> list[Problem]:
        bad_values = [
            f"{cell_name}[{edge_index}][{primitive_index}] is {format_json_value(value)}"
            for cell_name in CELL_NAMES
            for edge_index, row in enumerate(getattr(self, cell_name))
            for primitive_index, value in enumerate(row)
            if not math.isfinite(value)
        ]
        if not bad_values:
            return []

        # Logits turn NaN or infinite when the search's losses diverge. The learning rates are
        # SearchConfig fields without a `kdarts search` option or kernel spec parameter, so the
        # advice names the Python API for them.
        if len(bad_values) == 1:
            summary = "1 logit is not a finite number"
        else:
            summary = f"{len(bad_values)} logits are not finite numbers"
        return [(
            None,
            f"{summary}: {listed(bad_values, limit=4)}. Alphas that turn NaN or infinite mean that the search "
            f"diverged. Check train_loss and arch_loss in the search's metrics.jsonl, then rerun the search "
            f"with another seed (`kdarts search --seed`, or seed in a kernel spec's [params]), or from Python "
            f"with a smaller arch_learning_rate or learning_rate in kdarts.search.config.SearchConfig.",
        )]

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes per cell."""
        nodes = nodes_for_edge_count(len(self.normal))
        assert nodes is not None  # the validator has checked the edge count
        return nodes


class Provenance(BaseModel):
    """Origin of a plan: the tool, search settings and results that produced it. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, description="what produced the plan, e.g. 'derived from alphas' or an NNI export")
    settings: dict[str, Any] | None = Field(None, description="search settings, as the search tool wrote them")
    dataset: str | None = None
    # Strict, so a JSON true or false is rejected instead of being stored as 1 or 0.
    seed: int | None = Field(None, strict=True)
    epochs: int | None = Field(None, ge=0, strict=True)
    alphas: Alphas | None = Field(None, description="final architecture logits that the plan was derived from")
    val_accuracy: float | None = Field(
        None, strict=True, description="validation accuracy of the supernet at the end of the search"
    )


class Plan(BaseModel):
    """A derived DARTS architecture: primitive list, normal cell, reduction cell and provenance.

    `Plan.model_validate` checks the whole plan and raises pydantic's ValidationError. Use
    `load_plan` or `plan_from_data` to get a PlanError with a message that names each bad field.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    format_version: int = PLAN_FORMAT_VERSION
    primitives: list[str] = Field(description="primitive list of the search, so an operation index never changes meaning")
    normal: Cell
    reduce: Cell
    provenance: Provenance | None = None

    @field_validator("format_version")
    @classmethod
    def _check_format_version(cls, version: int) -> int:
        if version != PLAN_FORMAT_VERSION:
            raise _plan_value_error([(
                "",
                f"is {version}, but this kdarts reads format_version {PLAN_FORMAT_VERSION} only. "
                f"Upgrade kdarts or re-create the plan with this version.",
            )])
        return version

    @field_validator("primitives")
    @classmethod
    def _check_primitives(cls, primitives: list[str]) -> list[str]:
        return _check_names(primitives)

    @model_validator(mode="after")
    def _check_cells(self) -> Plan:
        problems: list[Problem] = []
        for cell_name in CELL_NAMES:
            problems.extend(_cell_problems(cell_name, getattr(self, cell_name), self.primitives))

        if not problems and self.normal.nodes != self.reduce.nodes:
            problems.append((
                None,
                f"The normal cell has {count_noun(self.normal.nodes, 'intermediate node')} but the reduce cell "
                f"has {self.reduce.nodes}. Both cells must have the same number of nodes.",
            ))

        if problems:
            raise _plan_value_error(problems)
        return self

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes per cell."""
        return self.normal.nodes

    def to_json(self) -> str:
        """Serialize the plan to indented JSON, leaving out unset provenance fields."""
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan to `path` atomically (see `save_plan`)."""
        save_plan(self, path)


def _cell_problems(cell_name: str, cell: Cell, primitives: list[str]) -> list[Problem]:
    problems: list[Problem] = []

    edge_count = len(cell.edges)
    if edge_count == 0:
        problems.append((f"{cell_name}.edges", "is empty. A cell needs 2 edges per intermediate node."))
        return problems
    if edge_count % EDGES_PER_NODE:
        problems.append((
            f"{cell_name}.edges",
            f"has {edge_count} edges, an odd number. "
            f"A cell needs exactly 2 edges per intermediate node, listed node by node.",
        ))
        return problems

    for index, edge in enumerate(cell.edges):
        path = f"{cell_name}.edges[{index}]"
        node = 2 + index // EDGES_PER_NODE

        if edge.operation == "none":
            problems.append((
                f"{path}.operation",
                "is 'none', which removes the edge. Every plan edge needs a real operation.",
            ))
        elif edge.operation not in primitives:
            problems.append((
                f"{path}.operation",
                f"is {format_json_value(edge.operation)}, which is not in primitives "
                f"{format_json_value(primitives, limit=400)}. Use one of them or add it to primitives.",
            ))

        if edge.input >= node:
            problems.append((
                f"{path}.input",
                f"is {edge.input}, but node {node} may take inputs 0..{node - 1} only. "
                f"Edges are listed node by node, 2 per node, starting with node 2.",
            ))

    last_node = cell.nodes + 1
    if not cell.concat:
        problems.append((
            f"{cell_name}.concat",
            f"is empty. List the intermediate nodes 2..{last_node} that form the cell output.",
        ))
    for index, node in enumerate(cell.concat):
        if not 2 <= node <= last_node:
            problems.append((
                f"{cell_name}.concat[{index}]",
                f"is {node}, out of range. Use intermediate nodes 2..{last_node}.",
            ))
    duplicates = sorted({node for node in cell.concat if cell.concat.count(node) > 1})
    if duplicates:
        problems.append((
            f"{cell_name}.concat",
            f"lists {format_json_value(duplicates)} more than once. List each node once.",
        ))

    return problems


def _error_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def describe_validation_error(error: ValidationError) -> str:
    """Render a pydantic ValidationError as sentences that name each field path and bad value.

    Values appear as JSON, and a problem repeated on several fields is described once.
    """
    located: list[tuple[str, Problem]] = []
    for detail in error.errors(include_url=False):
        path = _error_path(tuple(detail["loc"]))
        kind = detail["type"]

        if kind == "plan_invalid":
            problems: list[Problem] = detail["ctx"]["problems"]
            located.extend((path, problem) for problem in problems)
        elif kind == "missing":
            located.append((path, ("", "is missing. Add the field.")))
        elif kind == "extra_forbidden":
            value = format_json_value(detail["input"])
            located.append((path, ("", f"is not a known field (value {value}). Remove it.")))
        else:
            located.append((
                path or "the top level",
                (None, f"{detail['msg']}, got {format_json_value(detail['input'])}."),
            ))

    return " ".join(_describe_problems(located))


def plan_from_data(data: Any, *, source: str) -> Plan:
    """Validate `data` as a plan, raising PlanError that names `source` and each bad field.

    `source` is a short phrase that names where the data came from, e.g. "plan file 'a.json'".
    """
    if not isinstance(data, dict):
        raise PlanError(f"invalid {source}: expected a JSON object with a plan, got {type(data).__name__}.")
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        raise PlanError(f"invalid {source}: {describe_validation_error(error)}") from error


def alphas_from_data(data: Any, *, source: str) -> Alphas:
    """Validate `data` as alphas, raising PlanError that names `source` and each bad field."""
    if isinstance(data, Alphas):
        return data
    if not isinstance(data, dict):
        raise PlanError(
            f"invalid {source}: expected a JSON object with primitives, normal and reduce, got {type(data).__name__}."
        )
    try:
        return Alphas.model_validate(data)
    except ValidationError as error:
        raise PlanError(f"invalid {source}: {describe_validation_error(error)}") from error


def read_json_file(path: str | os.PathLike[str], *, kind: FileKind) -> Any:
    """Read and parse a JSON file of the `kind` "plan" or "alphas", raising PlanError that names the file.

    When the file is another kind of plan-tool input, such as an NNI export or a genotype
    string, the error names that kind and the command that reads it.
    """
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise PlanError(f"{kind} file not found: '{file_path}'. Check the path.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(f"failed to read {kind} file '{file_path}': {error}") from error

    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if looks_like_genotype(text):
            raise PlanError(wrong_kind_message(file_path, "genotype", kind)) from error
        raise PlanError(
            f"{kind} file '{file_path}' is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}. Fix the JSON syntax."
        ) from error

    found = json_kind(data)
    if found is not None and found != kind:
        raise PlanError(wrong_kind_message(file_path, found, kind))
    return data


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Load and validate a plan file, raising PlanError that names the file and each bad field."""
    data = read_json_file(path, kind="plan")
    plan = plan_from_data(data, source=f"plan file '{Path(path)}'")
    logger.debug("loaded plan %s with %d nodes per cell", path, plan.nodes)
    return plan


def load_alphas(path: str | os.PathLike[str]) -> Alphas:
    """Load and validate an alphas file, raising PlanError that names the file and each bad field."""
    data = read_json_file(path, kind="alphas")
    return alphas_from_data(data, source=f"alphas file '{Path(path)}'")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (see `kdarts.fileio.write_bytes_atomic`).

    Raises PlanError when the directory is missing or not writable.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise PlanError(
            f"failed to write '{target}': the directory '{target.parent}' does not exist. Create it or choose another path."
        )
    try:
        fileio.write_bytes_atomic(target, data)
    except OSError as error:
        raise PlanError(f"failed to write '{target}': {error}. Check that the directory is writable.") from error


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write `plan` to `path` as JSON atomically: temporary file, fsync, then rename."""
    write_bytes_atomic(path, plan.to_json().encode("utf-8"))
    logger.info("saved plan to %s", path)
