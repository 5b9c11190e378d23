"""Render kernel specs into notebooks and Kaggle kernel bundles.

A template is Jinja2 text in which a line `#%% markdown` or `#%% code` starts a cell (`#%% code
parameters` also tags the cell `parameters`, as papermill expects). The rendered text is split into
cells and built into an nbformat v4 notebook, which is validated before it is written.

A bundle is the folder `kaggle kernels push -p` takes: `<slug>/<slug>.ipynb` and
`kernel-metadata.json`. Files too large for the notebook (Kaggle rejects sources of 1 MB or more)
are listed in the spec's `assets`: they go into an attached dataset, and the notebook checks their
SHA-256 before it uses them.
"""

from __future__ import annotations

import json
import logging
import pprint
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import kdarts
from kdarts.errors import RenderError, SpecError
from kdarts.fileio import sha256_file
from kdarts.kernel.resources import template_folders
from kdarts.kernel.specs import KernelSpec
from kdarts.kernel.wheel import EngineWheel, build_engine_wheel

logger = logging.getLogger(__name__)

Target = Literal["kaggle", "colab"]
# Kaggle rejects a kernel source of 1 MB or more ("The kernel source must be less than 1 megabytes
# in size."); 1 MB is taken as 10^6 bytes, the stricter reading.
KAGGLE_SOURCE_LIMIT = 1_000_000
METADATA_FILE = "kernel-metadata.json"
_CELL_MARKER = re.compile(r"^#%% (markdown|code)( parameters)?\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


@dataclass(frozen=True)
class Asset:
    """A file shipped in the kernel's assets dataset instead of the notebook."""

    name: str
    path: Path
    sha256: str

    @property
    def is_wheel(self) -> bool:
        return self.name.endswith(".whl")


@dataclass(frozen=True)
class Bundle:
    """A rendered kernel bundle on disk."""

    folder: Path
    notebook: Path
    metadata: dict[str, Any]
    size: int

    @property
    def ref(self) -> str:
        return self.metadata["id"]


def _jinja_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(folder) for folder in template_folders()]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["pyrepr"] = lambda value: pprint.pformat(value, width=100, sort_dicts=False)
    environment.filters["batch_text"] = lambda text, size: [text[i : i + size] for i in range(0, len(text), size)]
    return environment


def notebook_parameters(spec: KernelSpec, target: Target, time_budget_seconds: float | None) -> dict[str, Any]:
    """Return the engine parameters the notebook receives, with the dataset slug and time budget."""
    parameters = dict(spec.params)
    parameters["dataset_slug"] = spec.dataset_slug()
    parameters["target"] = target
    parameters["time_budget_seconds"] = time_budget_seconds
    parameters["run_name"] = spec.kernel.slug
    if target == "colab":
        parameters["drive_folder"] = spec.kernel.drive_folder
    if spec.kernel.uses_assets:
        parameters["assets_slug"] = spec.kernel.assets_slug
    return parameters


def collect_assets(spec: KernelSpec, wheel: EngineWheel, target: Target = "kaggle") -> list[Asset]:
    """Return the files of the spec's assets dataset: its `assets`, and the engine wheel when not embedded."""
    assets = [Asset(name=path.name, path=path, sha256=sha256_file(path)) for path in spec.asset_paths()]
    names = [asset.name for asset in assets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RenderError(f"{spec.path}: kernel.assets lists several files named {', '.join(duplicates)}; rename one")
    if not embeds_engine(spec, target):
        if wheel.filename in names:
            raise RenderError(f"{spec.path}: kernel.assets already contains a file named {wheel.filename}")
        assets.append(Asset(name=wheel.filename, path=Path(wheel.filename), sha256=wheel.sha256))
    return assets


def embeds_engine(spec: KernelSpec, target: Target) -> bool:
    """Return whether the notebook carries the engine wheel; Colab notebooks always do.

    A Colab notebook installs the engine before Google Drive is mounted, and Drive notebooks have no
    1 MB source limit, so embedding is both needed and harmless there.
    """
    return spec.kernel.embed_engine or target == "colab"


def write_assets(spec: KernelSpec, wheel: EngineWheel, folder: Path, target: Target = "kaggle") -> list[Asset]:
    """Copy the assets dataset's files into `folder` (for publishing) and return them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    assets = collect_assets(spec, wheel, target)
    for asset in assets:
        if asset.name == wheel.filename and asset.sha256 == wheel.sha256:
            (folder / asset.name).write_bytes(wheel.data)
        else:
            shutil.copyfile(asset.path, folder / asset.name)
    return assets


def default_time_budget(spec: KernelSpec) -> float:
    """Return the engine's time budget: the session limit less a margin for start-up and outputs.

    The margin is 10% of the limit, at least 20 s and at most 30 minutes: it covers installing the
    engine, loading the data, writing the last checkpoint and the manifest.
    """
    limit = spec.kernel.session_limit
    margin = min(max(0.1 * limit, 20.0), 1800.0)
    return max(limit - margin, 0.5 * limit)


def validate_engine_parameters(spec: KernelSpec) -> None:
    """Check a search kernel's parameters with the engine's own settings model before rendering.

    A value the engine would reject (an unknown `order`, a batch size of 0) then fails here, on
    this machine, instead of in the notebook after a platform session has been spent on it.
    """
    if not spec.kernel.template.startswith("search"):
        return
    from pydantic import ValidationError

    from kdarts.search.config import SearchConfig

    values = {key: value for key, value in spec.params.items() if key in SearchConfig.model_fields and key != "data"}
    # The spec writes 0 for "every training image", where the engine's model expects None.
    if values.get("max_train_images") == 0:
        values["max_train_images"] = None
    try:
        SearchConfig(**values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            shown = json.dumps(values.get(str(item["loc"][0]))) if item["loc"] else "?"
            problems.append(f"params.{key} = {shown}: {item['msg']}")
        raise SpecError(f"{spec.path}: invalid search parameters: " + "; ".join(problems)) from error


def render_notebook(
    spec: KernelSpec,
    *,
    target: Target = "kaggle",
    wheel: EngineWheel | None = None,
    time_budget_seconds: float | None = None,
) -> nbformat.NotebookNode:
    """Render the spec's template into a validated notebook."""
    validate_engine_parameters(spec)
    wheel = wheel or build_engine_wheel()
    budget = time_budget_seconds if time_budget_seconds is not None else default_time_budget(spec)
    try:
        template = _jinja_environment().get_template(spec.kernel.template)
        text = template.render(
            spec=spec,
            params=notebook_parameters(spec, target, budget),
            wheel=wheel,
            embed_engine=embeds_engine(spec, target),
            assets=collect_assets(spec, wheel, target),
            target=target,
            kdarts_version=kdarts.__version__,
        )
    except jinja2.TemplateNotFound as error:
        folders = ", ".join(str(folder) for folder in template_folders())
        raise RenderError(f"{spec.path}: template {error.name!r} not found in {folders}") from error
    except jinja2.TemplateError as error:
        raise RenderError(f"{spec.path}: template {spec.kernel.template!r} failed to render: {error}") from error

    notebook = notebook_from_text(text, source=spec.kernel.template)
    notebook.metadata["kdarts"] = {
        "kernel": spec.name,
        "profile": spec.profile,
        "target": target,
        "version": kdarts.__version__,
        "wheel_sha256": wheel.sha256,
    }
    return notebook


def notebook_from_text(text: str, *, source: str = "<template>") -> nbformat.NotebookNode:
    """Split rendered template text at its cell markers into a validated nbformat v4.5 notebook."""
    cells = []
    kind: str | None = None
    tags: list[str] = []
    lines: list[str] = []

    def close_cell() -> None:
        body = "\n".join(lines).strip("\n")
        if kind is None:
            if body.strip():
                raise RenderError(f"{source}: text before the first '#%% markdown' or '#%% code' line: {body[:60]!r}")
            return
        if not body.strip():
            return
        cell = new_markdown_cell(body) if kind == "markdown" else new_code_cell(body)
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    for line in text.splitlines():
        match = _CELL_MARKER.match(line)
        if match:
            close_cell()
            kind = match.group(1)
            tags = ["parameters"] if match.group(2) else []
            lines = []
        else:
            lines.append(line)
    close_cell()

    # Fixed cell ids keep a rendered notebook byte-identical from one render to the next.
    for index, cell in enumerate(cells):
        cell["id"] = f"{cell.cell_type}-{index:02d}"
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        raise RenderError(f"{source}: the rendered notebook is invalid: {error.message}") from error
    return notebook


def kernel_metadata(spec: KernelSpec, owner: str) -> dict[str, Any]:
    """Return the `kernel-metadata.json` that `kaggle kernels push` reads."""
    metadata: dict[str, Any] = {
        "id": f"{owner}/{spec.kernel.slug}",
        "title": spec.kernel.title,
        "code_file": f"{spec.kernel.slug}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": spec.kernel.private,
        "enable_internet": spec.kernel.internet,
        "dataset_sources": spec.dataset_sources(owner),
        "competition_sources": [],
        "kernel_sources": spec.kernel_source_refs(owner),
        "model_sources": [],
    }
    if spec.kernel.accelerator:
        metadata["machine_shape"] = spec.kernel.accelerator
    return metadata


def write_bundle(
    spec: KernelSpec,
    folder: Path,
    *,
    owner: str,
    target: Target = "kaggle",
    wheel: EngineWheel | None = None,
    time_budget_seconds: float | None = None,
) -> Bundle:
    """Render the spec and write its bundle into `folder/<slug>/`; reject Kaggle sources of 1 MB or more.

    A Kaggle bundle holds `<slug>.ipynb` and `kernel-metadata.json`; a Colab bundle holds only the
    notebook, which Colab opens from Google Drive.
    """
    notebook = render_notebook(spec, target=target, wheel=wheel, time_budget_seconds=time_budget_seconds)
    text = nbformat.writes(notebook)
    size = len(text.encode("utf-8"))
    if target == "kaggle" and size >= KAGGLE_SOURCE_LIMIT:
        raise RenderError(
            f"{spec.name}: the rendered notebook is {size:,} bytes, but Kaggle rejects kernel sources of "
            f"{KAGGLE_SOURCE_LIMIT:,} bytes or more; move large files into an attached dataset"
        )

    bundle_folder = Path(folder) / spec.kernel.slug
    bundle_folder.mkdir(parents=True, exist_ok=True)
    metadata = kernel_metadata(spec, owner)
    notebook_path = bundle_folder / metadata["code_file"]
    notebook_path.write_text(text, encoding="utf-8")
    metadata_path = bundle_folder / METADATA_FILE
    if target == "kaggle":
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    else:
        metadata_path.unlink(missing_ok=True)
    logger.info("rendered %s (%s) to %s: %s bytes", spec.name, target, notebook_path, f"{size:,}")
    return Bundle(folder=bundle_folder, notebook=notebook_path, metadata=metadata, size=size)
