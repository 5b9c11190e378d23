"""Convert architectures exported by NNI's DARTS into plans, and convert plan input files by format.

Two NNI export formats are read, both checked against the NNI source (github.com/microsoft/nni):

NNI 1.x, `examples/nas/darts/model.py` with the DARTS mutator
(`nni.nas.pytorch.darts`, moved to `nni.algorithms.nas.pytorch.darts` in 2.0). Each node
`{cell}_n{i}` (i from 2) has one LayerChoice `{cell}_n{i}_p{j}` per input j < i and one
InputChoice `{cell}_n{i}_switch` that keeps 2 of them. Input j numbers the states as a plan
does. NNI 1.2 to 1.5 export one-hot boolean lists: 7 entries over `NNI1_OPERATIONS` for an
operation, and i entries for a switch. NNI 1.6 and later export names instead: an operation
name such as "sepconv3x3", and a list of chosen keys such as ["normal_n2_p0", "normal_n2_p1"].
An edge that the switch drops exports as an all-false list or [].

NNI 2.x and 3.x, the DARTS space in `nni/nas/hub/pytorch/nasnet.py` (`nni/retiarii/hub` in
2.8) with its Cell in `nni/nas/nn/pytorch/cell.py`. Each node i (from 2) has two operations
`{cell}/op_{i}_{k}` and two inputs `{cell}/input_{i}_{k}` for k in 0 and 1, with operation names
as in DARTS and inputs as an int (2.8) or a one-element list (2.10, 3.0). The keys "width"
and "depth" appear when the space searched those too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from kdarts.errors import PlanError
from kdarts.plan.genotype import plan_from_genotype
from kdarts.plan.model import (
    CELL_NAMES,
    DARTS_PRIMITIVES,
    EDGES_PER_NODE,
    Plan,
    Provenance,
    format_json_value,
    plan_from_data,
)
from kdarts.plan.shapes import NNI1_KEY, NNI2_KEY, json_kind, looks_like_genotype, text_kind, wrong_kind_message

logger = logging.getLogger(__name__)

# LayerChoice candidates of NNI 1.x examples/nas/darts/model.py (v1.2 to v1.9), in order.
# A one-hot operation list in an NNI 1.2 to 1.5 export indexes into this tuple.
NNI1_OPERATIONS: tuple[str, ...] = (
    "maxpool",
    "avgpool",
    "skipconnect",
    "sepconv3x3",
    "sepconv5x5",
    "dilconv3x3",
    "dilconv5x5",
)

# Operation names with underscores, hyphens and case removed, mapped to DARTS names. This
# covers NNI 1.x names ("sepconv3x3", "maxpool") and DARTS names ("sep_conv_3x3").
_OPERATION_ALIASES: dict[str, str] = {
    "none": "none",
    "zero": "none",
    "maxpool": "max_pool_3x3",
    "maxpool3x3": "max_pool_3x3",
    "avgpool": "avg_pool_3x3",
    "avgpool3x3": "avg_pool_3x3",
    "skipconnect": "skip_connect",
    "sepconv3x3": "sep_conv_3x3",
    "sepconv5x5": "sep_conv_5x5",
    "dilconv3x3": "dil_conv_3x3",
    "dilconv5x5": "dil_conv_5x5",
}

# Keys of the NNI 2.x/3.x DARTS space outside the cells: searched width and number of cells.
NNI_SPACE_SETTING_KEYS: tuple[str, ...] = ("width", "depth")

# Maximum node index accepted in a key. It bounds the work of checking for missing keys, which
# grows with the square of the node count, far above the 4 nodes of DARTS cells.
_MAX_NODE_INDEX = 64

# Maximum number of keys that a message lists before it gives a count of the rest.
_MAX_LISTED_KEYS = 12

SourceFormat = Literal["auto", "nni", "genotype"]


def _listed(keys: list[str]) -> str:
    listed_keys = keys[:_MAX_LISTED_KEYS]
    text = ", ".join(listed_keys)
    if len(keys) > len(listed_keys):
        text += f" and {len(keys) - len(listed_keys)} more"
    return text


def darts_operation_name(name: str, *, key: str, source: str) -> str:
    """Map an NNI or DARTS operation name to its DARTS name, raising PlanError for unknown names and `none`."""
    normalized = name.lower().replace("_", "").replace("-", "")
    operation = _OPERATION_ALIASES.get(normalized)
    if operation is None:
        known = [primitive for primitive in DARTS_PRIMITIVES if primitive != "none"]
        raise PlanError(
            f"{source}: {key} is {format_json_value(name)}, which is not a DARTS operation. Known operations: {known}, "
            f"also in NNI 1.x spelling ({', '.join(NNI1_OPERATIONS)})."
        )
    if operation == "none":
        raise PlanError(
            f"{source}: {key} is {format_json_value(name)}, the zero operation, "
            f"on an edge that the architecture keeps. "
            f"A plan cannot contain 'none'. Export the architecture again from a search space without "
            f"'none' among its candidates, or pick another operation for this edge."
        )
    return operation


def _check_node_index(node: int, key: str, source: str) -> None:
    if node > _MAX_NODE_INDEX:
        raise PlanError(
            f"{source}: {key} names node {node}, but kdarts converts node indices up to {_MAX_NODE_INDEX} only. "
            f"Check that the file is an export of NNI's DARTS space."
        )


def _check_keys(missing: list[str], unknown: list[str], source: str, example: str) -> None:
    problems: list[str] = []
    if missing:
        problems.append(f"Missing keys: {_listed(missing)}.")
    if unknown:
        problems.append(f"Unknown keys: {_listed(unknown)}.")
    if problems:
        raise PlanError(
            f"{source}: {' '.join(problems)} Expected keys for every intermediate node of both cells, "
            f"such as {example}. Check that the file is a complete export of NNI's DARTS space."
        )


def _nni1_operation(value: Any, key: str, source: str) -> str | None:
    """Return the DARTS operation of one NNI 1.x LayerChoice value, or None for a dropped edge."""
    if isinstance(value, str):
        return darts_operation_name(value, key=key, source=source)

    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(NNI1_OPERATIONS):
            raise PlanError(
                f"{source}: {key} is {value}, out of range for the {len(NNI1_OPERATIONS)} NNI 1.x "
                f"operations {list(NNI1_OPERATIONS)}."
            )
        return darts_operation_name(NNI1_OPERATIONS[value], key=key, source=source)

    if isinstance(value, list):
        if not value:
            return None
        if all(isinstance(item, bool) for item in value):
            if len(value) != len(NNI1_OPERATIONS):
                raise PlanError(
                    f"{source}: {key} is a one-hot list of {len(value)} entries, but NNI 1.x DARTS has "
                    f"{len(NNI1_OPERATIONS)} operations {list(NNI1_OPERATIONS)}. "
                    f"Only exports of NNI's DARTS example space can be converted."
                )
            chosen = [index for index, flag in enumerate(value) if flag]
            if not chosen:
                return None
            if len(chosen) > 1:
                raise PlanError(
                    f"{source}: {key} is {format_json_value(value)}, which chooses {len(chosen)} operations. "
                    f"Choose one."
                )
            return darts_operation_name(NNI1_OPERATIONS[chosen[0]], key=key, source=source)
        if len(value) == 1:
            return _nni1_operation(value[0], key, source)

    raise PlanError(
        f"{source}: {key} is {format_json_value(value)}. Expected an operation name such as \"sepconv3x3\", "
        f"an index, or a one-hot list of {len(NNI1_OPERATIONS)} booleans."
    )


def _nni1_inputs(value: Any, cell_name: str, node: int, source: str) -> list[int]:
    """Return the input indices that an NNI 1.x `_switch` value keeps."""
    key = f"{cell_name}_n{node}_switch"
    items = value if isinstance(value, list) else [value]

    if items and all(isinstance(item, bool) for item in items):
        if len(items) != node:
            raise PlanError(
                f"{source}: {key} is a multi-hot list of {len(items)} entries, but node {node} has {node} inputs."
            )
        inputs = [index for index, flag in enumerate(items) if flag]
    elif all(isinstance(item, str) for item in items):
        inputs = []
        for item in items:
            match = re.fullmatch(rf"{cell_name}_n{node}_p(\d+)", item)
            if match is None:
                raise PlanError(
                    f"{source}: {key} lists {format_json_value(item)}, expected input keys {cell_name}_n{node}_p0 .. "
                    f"{cell_name}_n{node}_p{node - 1}."
                )
            inputs.append(int(match.group(1)))
    elif all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        inputs = list(items)
    else:
        raise PlanError(
            f"{source}: {key} is {format_json_value(value)}. "
            f"Expected a list of input keys, input indices or a multi-hot list."
        )

    if len(set(inputs)) != EDGES_PER_NODE or len(inputs) != EDGES_PER_NODE:
        raise PlanError(
            f"{source}: {key} is {format_json_value(value)}, which keeps inputs {inputs}. "
            f"A DARTS node keeps exactly 2 different inputs."
        )
    out_of_range = [index for index in inputs if not 0 <= index < node]
    if out_of_range:
        raise PlanError(f"{source}: {key} keeps inputs {out_of_range}, but node {node} has inputs 0..{node - 1}.")
    return sorted(inputs)


def _plan_from_nni1(data: Mapping[str, Any], source: str) -> Plan:
    present: set[tuple[str, int, int | None]] = set()
    unknown: list[str] = []
    last_node = 1

    for key in data:
        match = NNI1_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        node = int(match.group(2))
        _check_node_index(node, key, source)
        input_index = int(match.group(3)) if match.group(3) is not None else None
        present.add((match.group(1), node, input_index))
        last_node = max(last_node, node)

    expected: set[tuple[str, int, int | None]] = set()
    for cell_name in CELL_NAMES:
        for node in range(2, last_node + 1):
            expected.add((cell_name, node, None))
            expected.update((cell_name, node, input_index) for input_index in range(node))

    def key_name(entry: tuple[str, int, int | None]) -> str:
        cell_name, node, input_index = entry
        suffix = "switch" if input_index is None else f"p{input_index}"
        return f"{cell_name}_n{node}_{suffix}"

    missing = sorted(key_name(entry) for entry in expected - present)
    unknown += sorted(key_name(entry) for entry in present - expected)
    _check_keys(missing, unknown, source, "normal_n2_p0, normal_n2_p1 and normal_n2_switch")

    plan_data: dict[str, Any] = {"primitives": list(DARTS_PRIMITIVES)}
    for cell_name in CELL_NAMES:
        edges: list[dict[str, Any]] = []
        for node in range(2, last_node + 1):
            inputs = _nni1_inputs(data[f"{cell_name}_n{node}_switch"], cell_name, node, source)
            for input_index in inputs:
                key = f"{cell_name}_n{node}_p{input_index}"
                operation = _nni1_operation(data[key], key, source)
                if operation is None:
                    raise PlanError(
                        f"{source}: {cell_name}_n{node}_switch keeps input {input_index}, but {key} is "
                        f"{format_json_value(data[key])}, which chooses no operation. Export the architecture again."
                    )
                edges.append({"operation": operation, "input": input_index})
        plan_data[cell_name] = {"edges": edges, "concat": list(range(2, last_node + 1))}

    plan_data["provenance"] = {"source": "NNI 1.x DARTS export"}
    return plan_from_data(plan_data, source=source)


def _nni2_input(value: Any, key: str, node: int, source: str) -> int:
    item = value
    if isinstance(value, list) and len(value) == 1:
        item = value[0]
    if isinstance(item, bool) or not isinstance(item, int):
        raise PlanError(f"{source}: {key} is {format_json_value(value)}, expected an input index such as 0 or [0].")
    if not 0 <= item < node:
        raise PlanError(f"{source}: {key} is {format_json_value(value)}, but node {node} has inputs 0..{node - 1}.")
    return item


def _nni2_operation(value: Any, key: str, source: str) -> str:
    item = value
    if isinstance(value, list) and len(value) == 1:
        item = value[0]
    if not isinstance(item, str):
        raise PlanError(
            f"{source}: {key} is {format_json_value(value)}, expected an operation name such as \"sep_conv_3x3\"."
        )
    return darts_operation_name(item, key=key, source=source)


def _plan_from_nni2(data: Mapping[str, Any], source: str) -> Plan:
    present: set[tuple[str, str, int, int]] = set()
    unknown: list[str] = []
    settings: dict[str, Any] = {}
    last_node = 1

    for key, value in data.items():
        if key in NNI_SPACE_SETTING_KEYS:
            settings[key] = value
            continue
        match = NNI2_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        node = int(match.group(3))
        _check_node_index(node, key, source)
        present.add((match.group(1), match.group(2), node, int(match.group(4))))
        last_node = max(last_node, node)

    expected = {
        (cell_name, kind, node, slot)
        for cell_name in CELL_NAMES
        for kind in ("op", "input")
        for node in range(2, last_node + 1)
        for slot in range(EDGES_PER_NODE)
    }

    def key_name(entry: tuple[str, str, int, int]) -> str:
        cell_name, kind, node, slot = entry
        return f"{cell_name}/{kind}_{node}_{slot}"

    missing = sorted(key_name(entry) for entry in expected - present)
    unknown += sorted(key_name(entry) for entry in present - expected)
    _check_keys(missing, unknown, source, "normal/op_2_0 and normal/input_2_0")

    plan_data: dict[str, Any] = {"primitives": list(DARTS_PRIMITIVES)}
    for cell_name in CELL_NAMES:
        edges: list[dict[str, Any]] = []
        # Slots keep NNI's order, which in a DARTS export puts the stronger edge first.
        for node in range(2, last_node + 1):
            for slot in range(EDGES_PER_NODE):
                operation_key = f"{cell_name}/op_{node}_{slot}"
                input_key = f"{cell_name}/input_{node}_{slot}"
                edges.append({
                    "operation": _nni2_operation(data[operation_key], operation_key, source),
                    "input": _nni2_input(data[input_key], input_key, node, source),
                })
        plan_data[cell_name] = {"edges": edges, "concat": list(range(2, last_node + 1))}

    provenance = Provenance(source="NNI 2.x/3.x DARTS export", settings=settings or None)
    plan_data["provenance"] = provenance.model_dump(exclude_none=True)
    return plan_from_data(plan_data, source=source)


def plan_from_nni(data: Mapping[str, Any], *, source: str = "NNI export") -> Plan:
    """Convert an architecture exported by NNI's DARTS (NNI 1.x, 2.x or 3.x) into a plan.

    The format is detected from the keys, see the module docstring. The plan uses
    `DARTS_PRIMITIVES`. Raises PlanError, with `source` at the start of the message, for
    missing or unknown keys, `none` on a kept edge, unknown operation names, or inputs out of
    range. Nothing is guessed: an export that does not fit is rejected.
    """
    if not isinstance(data, Mapping):
        raise PlanError(f"{source}: expected a JSON object of NNI choices, got {type(data).__name__}.")

    keys = [str(key) for key in data]
    nni1 = any(NNI1_KEY.match(key) for key in keys)
    nni2 = any(NNI2_KEY.match(key) for key in keys)

    if nni1 and nni2:
        raise PlanError(
            f"{source}: mixes NNI 1.x keys (normal_n2_p0) and NNI 2.x/3.x keys (normal/op_2_0). "
            f"Convert one export at a time."
        )
    if nni1:
        plan = _plan_from_nni1(data, source)
        logger.info("converted an NNI 1.x export with %d nodes per cell", plan.nodes)
        return plan
    if nni2:
        plan = _plan_from_nni2(data, source)
        logger.info("converted an NNI 2.x/3.x export with %d nodes per cell", plan.nodes)
        return plan

    raise PlanError(
        f"{source}: found no NNI DARTS keys among {_listed(sorted(keys)) or 'no keys'}. Expected NNI 1.x keys "
        f"such as normal_n2_p0 and normal_n2_switch, or NNI 2.x/3.x keys such as normal/op_2_0 and normal/input_2_0."
    )


def _detect_format(text: str, file_label: str) -> Literal["nni", "genotype"]:
    stripped = text.strip()
    genotype_like = looks_like_genotype(text)

    if stripped.startswith(("{", "[")):
        try:
            json.loads(stripped)
        except json.JSONDecodeError as error:
            if genotype_like:
                return "genotype"
            raise PlanError(
                f"{file_label} starts like JSON but is not valid JSON: {error.msg} at line {error.lineno}, "
                f"column {error.colno}. Fix the JSON, or pass --from genotype for a genotype string."
            ) from error
        return "nni"

    if genotype_like:
        return "genotype"

    raise PlanError(
        f"cannot detect the format of {file_label}: it is neither a JSON object (an NNI export) nor a "
        f"DARTS genotype containing 'Genotype(' or 'normal='. Pass --from nni or --from genotype."
    )


def _nni_data_from_json(text: str, file_path: Path) -> Mapping[str, Any]:
    file_label = f"'{file_path}'"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if looks_like_genotype(text):
            raise PlanError(wrong_kind_message(file_path, "genotype", "nni")) from error
        raise PlanError(
            f"{file_label} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}. "
            f"Fix the JSON syntax."
        ) from error

    found = json_kind(data)
    if found in ("plan", "alphas"):
        raise PlanError(wrong_kind_message(file_path, found, "nni"))

    # NNI 3.0's export_top_models(formatter="dict") returns a list, so a dumped top-1 list is unwrapped.
    if isinstance(data, list):
        if len(data) == 1 and isinstance(data[0], dict):
            data = data[0]
        else:
            raise PlanError(
                f"{file_label} contains a list of {len(data)} entries, expected one architecture. "
                f"Save a single exported architecture as a JSON object."
            )
    if not isinstance(data, dict):
        raise PlanError(f"{file_label} contains {type(data).__name__}, expected a JSON object of NNI choices.")
    return data


def convert_plan(path: str | os.PathLike[str], source_format: SourceFormat = "auto") -> Plan:
    """Read an NNI export or a DARTS genotype from `path` and convert it into a plan.

    With `source_format="auto"`, a file whose text is a JSON object is read as an NNI export,
    and a file containing `Genotype(` or `normal=` as a genotype. NNI's list of top models is
    accepted when it contains one architecture. Raises PlanError naming the file.
    """
    file_path = Path(path)
    file_label = f"'{file_path}'"
    if source_format not in ("auto", "nni", "genotype"):
        raise PlanError(f"unknown source format {source_format!r}. Use auto, nni or genotype.")

    try:
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise PlanError(f"input file not found: {file_label}. Check the path.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(f"failed to read input file {file_label}: {error}") from error

    detected = _detect_format(text, file_label) if source_format == "auto" else source_format
    logger.debug("converting %s as %s", file_path, detected)

    if detected == "nni":
        data = _nni_data_from_json(text, file_path)
        return plan_from_nni(data, source=f"NNI export {file_label}")

    # A JSON file forced through the genotype parser would fail with a Python syntax message,
    # so a recognized JSON kind gets a message that names it instead.
    found = text_kind(text)
    if found is not None and found != "genotype":
        raise PlanError(wrong_kind_message(file_path, found, "genotype"))

    try:
        plan = plan_from_genotype(text)
    except PlanError as error:
        raise PlanError(f"genotype file {file_label}: {error}") from error
    provenance = Provenance(source=f"DARTS genotype file {file_path.name}")
    return plan.model_copy(update={"provenance": provenance})
