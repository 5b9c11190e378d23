"""Kernel specs: one TOML file per kernel in `kernels/`, validated before anything is rendered.

A spec looks like this (every key is checked, and unknown keys are errors):

    [kernel]
    template = "search.ipynb.j2"
    slug = "kdarts-search"            # 5 to 50 lowercase letters, digits and dashes
    title = "kdarts search"           # must slugify to `slug`
    machine_shape = "NvidiaTeslaT4"   # Kaggle accelerator, or "none"
    internet = false
    private = true
    session_limit = "12h"             # the platform's limit: 40, "40s", "30m", "12h"
    dataset = "sample"                # searched dataset: "sample", "owner/slug" or "slug" (yours)
    datasets = []                     # further datasets to attach: "owner/slug" or "slug"
    kernel_sources = []               # kernels whose output is attached: "owner/slug" or "slug"
    drive_folder = "kdarts"           # Colab: folder under My Drive for datasets and runs
    assets = []                       # files (relative to the spec) shipped in an attached dataset
    assets_dataset = ""               # that dataset's slug; empty means "<slug>-assets"
    embed_engine = true               # false: the engine wheel goes into the assets dataset too
    default_profile = "local"

    [params]                          # engine parameters; profiles and --set may only change these
    epochs = 50

    [profiles.local]                  # a profile overrides [kernel] keys and [params]
    session_limit = "30m"
    [profiles.local.params]
    epochs = 5

Without `--profile`, the profile named after the backend (push) or target (render) is applied when
the spec has one, else `default_profile`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator
from slugify import slugify

from kdarts.errors import SpecError
from kdarts.kernel.resources import spec_folders

# Kaggle kernel slugs are 5 to 50 characters; dataset slugs are 6 to 50, which Kaggle checks itself.
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]$")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MACHINE_SHAPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# Kaggle reports sources written with these prefixes as invalid and drops them from the kernel.
SOURCE_PREFIXES = ("datasets/", "code/", "kernels/", "c/", "competitions/", "models/")
SAMPLE_DATASET = "sample"
SAMPLE_DATASET_SLUG = "kdarts-cifar10-sample"
ASSETS_SUFFIX = "-assets"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}
_SPEC_TABLES = ("kernel", "params", "profiles")


def parse_duration(value: str | int | float) -> float:
    """Return seconds for a duration such as 40, "40s", "30m" or "12h"."""
    if isinstance(value, bool):
        raise ValueError("invalid duration; use seconds or a string such as '30m' or '12h'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("invalid duration; use seconds or a string such as '40s', '30m' or '12h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("invalid duration; use seconds or a string such as '40s', '30m' or '12h'")
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    return seconds


def normalize_source(value: str, *, allow_bare: bool = True) -> str:
    """Strip a `datasets/`-style prefix and check that a source reads `owner/slug` (or `slug`).

    A bare `slug` names a source owned by whoever pushes the kernel; `resolve_source` adds the owner.
    """
    if not isinstance(value, str):
        raise ValueError(f"source {value!r} must be a string 'owner/slug'")
    source = value.strip()
    for prefix in SOURCE_PREFIXES:
        if source.startswith(prefix):
            source = source[len(prefix) :]
            break
    parts = source.split("/")
    if len(parts) == 1 and allow_bare:
        owner, slug = None, parts[0]
    elif len(parts) == 2:
        owner, slug = parts
        if not OWNER_PATTERN.match(owner):
            raise ValueError(f"source {value!r} has an invalid owner {owner!r}; expected 'owner/slug'")
    else:
        raise ValueError(f"source {value!r} is invalid; expected 'owner/slug', without a version or a URL")
    if not SLUG_PATTERN.match(slug):
        raise ValueError(f"source {value!r} has an invalid slug {slug!r}; use 5 to 50 lowercase letters, digits and dashes")
    return source


def resolve_source(source: str, owner: str) -> str:
    """Return `owner/slug` for a normalized source, adding `owner` to a bare slug."""
    return source if "/" in source else f"{owner}/{source}"


def source_slug(source: str) -> str:
    """Return the slug part of a source, which is also its folder name under `input/`."""
    return source.split("/")[-1]


class KernelSettings(BaseModel):
    """The `[kernel]` table: what the platform needs to know about the kernel."""

    model_config = ConfigDict(extra="forbid")

    template: str
    slug: str
    title: str
    machine_shape: str = "none"
    internet: StrictBool = False
    private: StrictBool = True
    session_limit: float = Field(12 * 3600, description="seconds")
    dataset: str = SAMPLE_DATASET
    datasets: list[str] = Field(default_factory=list)
    kernel_sources: list[str] = Field(default_factory=list)
    drive_folder: str = "kdarts"
    assets: list[str] = Field(default_factory=list)
    assets_dataset: str = ""
    embed_engine: StrictBool = True
    default_profile: str | None = None

    @field_validator("template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        if not template.endswith(".j2") or "/" in template or "\\" in template:
            raise ValueError("expected a template file name such as 'search.ipynb.j2'")
        return template

    @field_validator("slug")
    @classmethod
    def _check_slug(cls, slug: str) -> str:
        if not SLUG_PATTERN.match(slug):
            raise ValueError(
                "invalid slug; use 5 to 50 lowercase letters, digits and dashes, "
                "starting and ending with a letter or digit"
            )
        return slug

    @field_validator("title")
    @classmethod
    def _check_title(cls, title: str) -> str:
        if not 5 <= len(title) <= 50:
            raise ValueError("the title must be 5 to 50 characters long")
        return title

    @field_validator("machine_shape")
    @classmethod
    def _check_machine_shape(cls, shape: str) -> str:
        if not MACHINE_SHAPE_PATTERN.match(shape):
            raise ValueError("expected a Kaggle machine shape such as 'NvidiaTeslaT4', or 'none'")
        return shape

    @field_validator("session_limit", mode="before")
    @classmethod
    def _parse_session_limit(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        return value if value == SAMPLE_DATASET else normalize_source(value)

    @field_validator("datasets", "kernel_sources")
    @classmethod
    def _check_sources(cls, values: list[str]) -> list[str]:
        return [normalize_source(value) for value in values]

    @field_validator("drive_folder")
    @classmethod
    def _check_drive_folder(cls, folder: str) -> str:
        parts = folder.strip("/").split("/")
        if not folder.strip("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError("expected a folder path under My Drive such as 'kdarts' or 'work/kdarts'")
        return folder.strip("/")

    @field_validator("assets")
    @classmethod
    def _check_assets(cls, assets: list[str]) -> list[str]:
        for asset in assets:
            if Path(asset).is_absolute() or ".." in Path(asset).parts:
                raise ValueError(f"asset {asset!r} must be a path inside the spec's folder")
        return assets

    @model_validator(mode="after")
    def _check_assets_dataset(self) -> KernelSettings:
        if self.assets_dataset and not SLUG_PATTERN.match(self.assets_dataset):
            raise ValueError(f"assets_dataset {self.assets_dataset!r} is not a valid slug (5 to 50 lowercase letters, digits, dashes)")
        if self.uses_assets and not SLUG_PATTERN.match(self.assets_slug):
            raise ValueError(
                f"the assets dataset slug {self.assets_slug!r} is longer than 50 characters; set a shorter assets_dataset"
            )
        return self

    @property
    def accelerator(self) -> str | None:
        return None if self.machine_shape.lower() == "none" else self.machine_shape

    @property
    def uses_assets(self) -> bool:
        """Whether the kernel needs an assets dataset: it lists assets or does not embed the engine."""
        return bool(self.assets) or not self.embed_engine

    @property
    def assets_slug(self) -> str:
        return self.assets_dataset or f"{self.slug}{ASSETS_SUFFIX}"


class KernelSpec(BaseModel):
    """A validated kernel spec with one profile applied."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    profile: str | None
    kernel: KernelSettings
    params: dict[str, Any]

    def dataset_slug(self) -> str:
        """Return the slug of the searched dataset as it appears under `input/`."""
        if self.kernel.dataset == SAMPLE_DATASET:
            return SAMPLE_DATASET_SLUG
        return source_slug(self.kernel.dataset)

    def dataset_ref(self, owner: str) -> str:
        """Return the searched dataset as `owner/slug`."""
        if self.kernel.dataset == SAMPLE_DATASET:
            return f"{owner}/{SAMPLE_DATASET_SLUG}"
        return resolve_source(self.kernel.dataset, owner)

    def assets_ref(self, owner: str) -> str | None:
        """Return the assets dataset as `owner/slug`, or None when the kernel has none."""
        return f"{owner}/{self.kernel.assets_slug}" if self.kernel.uses_assets else None

    def asset_paths(self) -> list[Path]:
        """Return the asset files, resolved against the spec's folder; raise when one is missing."""
        paths = []
        for asset in self.kernel.assets:
            path = self.path.parent / asset
            if not path.is_file():
                raise SpecError(f"{self.path}: kernel.assets entry {asset!r} is not a file ({path} not found)")
            paths.append(path)
        return paths

    def dataset_sources(self, owner: str) -> list[str]:
        """Return every dataset to attach, as `owner/slug`: the searched one, the others, the assets."""
        sources = [self.dataset_ref(owner)]
        for source in self.kernel.datasets:
            resolved = resolve_source(source, owner)
            if resolved not in sources:
                sources.append(resolved)
        assets = self.assets_ref(owner)
        if assets is not None and assets not in sources:
            sources.append(assets)
        return sources

    def kernel_source_refs(self, owner: str) -> list[str]:
        """Return the kernels whose output is attached, as `owner/slug`."""
        return [resolve_source(source, owner) for source in self.kernel.kernel_sources]


@dataclass
class _Merged:
    """Values of the [kernel] and [params] tables after profiles and overrides, with their origins."""

    kernel: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def find_spec(name: str, cwd: Path | None = None) -> Path:
    """Return the spec file for kernel `name`: ./kernels/<name>.toml first, then the built-in one."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SpecError(f"kernel spec {path} not found; pass a kernel name (see kdarts-kernel list) or a .toml file")
        return path
    folders = spec_folders(cwd)
    for folder in folders:
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    known = sorted({path.stem for folder in folders for path in folder.glob("*.toml")})
    raise SpecError(f"no kernel spec named {name!r}; known kernels: {', '.join(known) or 'none'}")


def list_specs(cwd: Path | None = None) -> dict[str, Path]:
    """Return every known kernel name and its spec file, local specs shadowing built-in ones."""
    found: dict[str, Path] = {}
    for folder in spec_folders(cwd):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def spec_profiles(name: str, cwd: Path | None = None) -> list[str]:
    """Return the profile names a spec defines."""
    path = find_spec(name, cwd)
    return sorted(_table(_read_toml(path), "profiles", path))


def load_spec(
    name: str,
    *,
    profile: str | None = None,
    overrides: list[str] | None = None,
    platform: str | None = None,
    cwd: Path | None = None,
) -> KernelSpec:
    """Load, merge and validate a spec, applying a profile and `key=value` overrides.

    `platform` is the backend or target the spec is loaded for: without `profile`, the profile of
    that name is applied when the spec has one, else the spec's `default_profile`.
    """
    path = find_spec(name, cwd)
    raw = _read_toml(path)
    unknown = sorted(set(raw) - set(_SPEC_TABLES))
    if unknown:
        raise SpecError(f"{path}: unknown table(s) {', '.join(unknown)}; allowed: {', '.join(_SPEC_TABLES)}")

    profiles = _table(raw, "profiles", path)
    base_kernel = _table(raw, "kernel", path)
    chosen = _choose_profile(path, profiles, profile, platform, base_kernel.get("default_profile"))
    settings, merged = _merge_and_validate(path, raw, profiles, chosen, overrides or [])

    # Every other profile is validated too, so a broken profile shows before anyone picks it.
    for other in sorted(set(profiles) - {chosen}):
        _merge_and_validate(path, raw, profiles, other, [])
    return KernelSpec(name=path.stem, path=path, profile=chosen, kernel=settings, params=merged.params)


def _merge_and_validate(
    path: Path, raw: dict[str, Any], profiles: dict[str, Any], profile: str | None, overrides: list[str]
) -> tuple[KernelSettings, _Merged]:
    """Merge [kernel], [params], one profile and the overrides, then validate the kernel settings."""
    merged = _Merged()
    for key, value in _table(raw, "kernel", path).items():
        merged.kernel[key] = value
        merged.origins[f"kernel.{key}"] = f"kernel.{key}"
    for key, value in _table(raw, "params", path).items():
        merged.params[key] = value
        merged.origins[f"params.{key}"] = f"params.{key}"
    if profile is not None:
        _apply_profile(path, profile, _table(profiles, profile, path, prefix="profiles."), merged)
    for override in overrides:
        _apply_override(path, override, merged)

    try:
        settings = KernelSettings.model_validate(merged.kernel)
    except ValidationError as error:
        raise SpecError(_describe(error, path, merged)) from error

    expected_slug = slugify(settings.title)
    if expected_slug != settings.slug:
        raise SpecError(
            f"{path}: {merged.origins.get('kernel.title', 'kernel.title')} = {settings.title!r} becomes the slug "
            f"{expected_slug!r}, not kernel.slug {settings.slug!r}; Kaggle files a kernel under its title's slug, "
            "so make the two match"
        )
    return settings, merged


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key=value`; the value is read as a TOML literal, or else taken as a plain string."""
    key, separator, value = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise SpecError(f"invalid --set {text!r}; expected key=value, for example --set epochs=3")
    try:
        parsed = tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from error


def _choose_profile(
    path: Path, profiles: dict[str, Any], requested: str | None, platform: str | None, default: Any
) -> str | None:
    if requested is not None:
        if requested not in profiles:
            raise SpecError(
                f"{path}: --profile {requested!r} not found; profiles: {', '.join(sorted(profiles)) or 'none'}"
            )
        return requested
    if platform is not None and platform in profiles:
        return platform
    if default is None:
        return None
    if not isinstance(default, str) or default not in profiles:
        raise SpecError(
            f"{path}: kernel.default_profile = {default!r}: no such profile; profiles: {', '.join(sorted(profiles)) or 'none'}"
        )
    return default


def _apply_profile(path: Path, name: str, table: dict[str, Any], merged: _Merged) -> None:
    table = dict(table)
    profile_params = table.pop("params", {})
    if not isinstance(profile_params, dict):
        raise SpecError(f"{path}: profiles.{name}.params = {profile_params!r}: must be a table")
    if "default_profile" in table:
        raise SpecError(
            f"{path}: profiles.{name}.default_profile = {table['default_profile']!r}: a profile cannot choose the "
            "default profile; set it in [kernel]"
        )
    for key, value in table.items():
        merged.kernel[key] = value
        merged.origins[f"kernel.{key}"] = f"profiles.{name}.{key}"
    for key, value in profile_params.items():
        _set_param(path, merged, key, value, f"profiles.{name}.params.{key}")


def _apply_override(path: Path, text: str, merged: _Merged) -> None:
    key, value = parse_override(text)
    if key.startswith("kernel."):
        name = key.removeprefix("kernel.")
        merged.kernel[name] = value
        merged.origins[f"kernel.{name}"] = f"--set {key}"
    else:
        _set_param(path, merged, key.removeprefix("params."), value, f"--set {key}")


def _set_param(path: Path, merged: _Merged, key: str, value: Any, origin: str) -> None:
    """Override a declared parameter, keeping the type [params] gives it."""
    if key not in merged.params:
        known = ", ".join(sorted(merged.params)) or "none"
        hint = " (kernel settings take the prefix kernel., as in --set kernel.session_limit=40s)"
        raise SpecError(
            f"{path}: {origin} = {value!r}: unknown parameter {key!r}; the spec's [params] declares: {known}"
            + (hint if key in KernelSettings.model_fields else "")
        )
    declared = merged.params[key]
    if not _same_kind(declared, value):
        kind = _KIND_NAMES.get(type(declared), type(declared).__name__)
        raise SpecError(
            f"{path}: {origin} = {value!r}: expected {kind} like {merged.origins[f'params.{key}']} = {declared!r}"
        )
    merged.params[key] = float(value) if isinstance(declared, float) else value
    merged.origins[f"params.{key}"] = origin


_KIND_NAMES = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _same_kind(declared: Any, value: Any) -> bool:
    if isinstance(declared, bool) or isinstance(value, bool):
        return isinstance(declared, bool) and isinstance(value, bool)
    if isinstance(declared, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(declared))


def _table(raw: dict[str, Any], key: str, path: Path, prefix: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{path}: {prefix}{key} = {value!r}: must be a table")
    return value


def _describe(error: ValidationError, path: Path, merged: _Merged) -> str:
    problems = []
    for item in error.errors():
        top = str(item["loc"][0]) if item["loc"] else ""
        message = item["msg"].removeprefix("Value error, ")
        if not top:
            problems.append(message)
            continue
        origin = merged.origins.get(f"kernel.{top}", f"kernel.{top}")
        if item["type"] == "missing":
            problems.append(f"kernel.{top} is missing: add it to [kernel]")
        elif item["type"] == "bool_type":
            problems.append(f"{origin} = {merged.kernel.get(top)!r}: expected true or false (a TOML boolean, not a string)")
        elif item["type"] == "extra_forbidden":
            allowed = ", ".join(KernelSettings.model_fields)
            problems.append(f"{origin} = {merged.kernel.get(top)!r}: unknown key; [kernel] keys are: {allowed}")
        else:
            suffix = "".join(f"[{part}]" for part in item["loc"][1:])
            problems.append(f"{origin}{suffix} = {merged.kernel.get(top, '<missing>')!r}: {message}")
    return f"{path}: " + "; ".join(problems)
