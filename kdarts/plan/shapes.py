"""Recognize which kind of plan-tool input a file contains, so a command given the wrong kind can name the right one.

The plan commands read four kinds of file: plans (`kdarts plan show`), alphas
(`kdarts plan derive`), NNI DARTS exports and DARTS genotype strings (`kdarts plan convert`).
This module depends on no other plan module, so the loaders in model.py can use it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal

FileKind = Literal["plan", "alphas", "nni", "genotype"]

# Keys of NNI's DARTS exports, described in nni.py: NNI 1.x `normal_n2_p0` and `normal_n2_switch`,
# NNI 2.x/3.x `normal/op_2_0` and `normal/input_2_0`.
NNI1_KEY = re.compile(r"^(normal|reduce)_n(\d+)_(?:p(\d+)|switch)$")
NNI2_KEY = re.compile(r"^(normal|reduce)/(op|input)_(\d+)_(\d+)$")

_DESCRIPTIONS: dict[FileKind, str] = {
    "plan": "a kdarts plan",
    "alphas": "an alphas file (the architecture logits of a search)",
    "nni": "an NNI DARTS export",
    "genotype": "a DARTS genotype string",
}

_EXPECTED_NOUNS: dict[FileKind, str] = {
    "plan": "a plan",
    "alphas": "an alphas file",
    "nni": "an NNI export (JSON)",
    "genotype": "a genotype string",
}


def looks_like_genotype(text: str) -> bool:
    """Return True when `text` contains `Genotype(` or `normal=`, as every DARTS genotype string does."""
    return "Genotype(" in text or "normal=" in text


def has_nni_keys(data: dict[Any, Any]) -> bool:
    """Return True when any key of `data` has the form of an NNI 1.x, 2.x or 3.x DARTS choice key."""
    keys = [str(key) for key in data]
    return any(NNI1_KEY.match(key) or NNI2_KEY.match(key) for key in keys)


def json_kind(data: Any) -> FileKind | None:
    """Return the kind of file that the parsed JSON `data` looks like, or None when it looks like none of them.

    A plan has `format_version` or a `normal` object. Alphas have `primitives` and `normal`
    and `reduce` lists of rows. An NNI export has NNI choice keys, and NNI 3.0's
    `export_top_models` writes a list of such objects.
    """
    if isinstance(data, list):
        if data and all(isinstance(item, dict) for item in data) and has_nni_keys(data[0]):
            return "nni"
        return None
    if not isinstance(data, dict):
        return None

    normal = data.get("normal")
    if "format_version" in data or isinstance(normal, dict):
        return "plan"
    reduce = data.get("reduce")
    if "primitives" in data and isinstance(normal, list) and isinstance(reduce, list):
        if all(isinstance(row, list) for row in normal + reduce):
            return "alphas"
    if has_nni_keys(data):
        return "nni"
    return None


def text_kind(text: str) -> FileKind | None:
    """Return the kind of file that `text` looks like: a JSON kind (see `json_kind`), a genotype, or None."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return "genotype" if looks_like_genotype(text) else None
    return json_kind(data)


def wrong_kind_message(path: Path, found: FileKind, expected: FileKind) -> str:
    """Return a message that names the kind `path` looks like (`found`) and the command or option to use instead.

    `expected` "nni" or "genotype" means that `kdarts plan convert --from` forced that format,
    so the fix for another input format is a different --from value.
    """
    quoted = shlex.quote(str(path))
    forced_format = expected in ("nni", "genotype")

    if found == "plan":
        step = f"Use it directly, e.g. `kdarts plan show {quoted}`."
    elif found == "alphas":
        step = f"Derive a plan from it with `kdarts plan derive {quoted} -o plan.json`."
    elif forced_format:
        step = f"Pass --from {found}, or --from auto to detect the format."
    else:
        step = f"Convert it into a plan with `kdarts plan convert {quoted} -o plan.json`."

    return f"'{path}' looks like {_DESCRIPTIONS[found]}, not {_EXPECTED_NOUNS[expected]}. {step}"
