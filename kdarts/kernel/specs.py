"""Kernel specs: one TOML file per kernel in `kernels/`, validated before anything is rendered.

A spec looks like this (every key is checked; unknown keys are errors):

    [kernel]
    template = "search.ipynb.j2"
    slug = "kdarts-search"
    title = "kdarts search"
    machine_shape = "NvidiaTeslaT4"   # Kaggle accelerator, or "none"
    internet = false
    private = true
    session_limit = "12h"             # the platform's limit: "40s", "30m", "12h"
    dataset = "sample"                # searched dataset: "sample" or "owner/slug"
    datasets = []                     # further datasets to attach, "owner/slug"
    default_profile = "local"

    [params]                          # engine parameters
    epochs = 50

    [profiles.local]                  # overrides of [kernel] keys and [params]
    session_limit = "30m"
    [profiles.local.params]
    epochs = 5
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator
from slugify import slugify

from kdarts.errors import SpecError
from kdarts.kernel.resources import spec_folders

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]$")
SOURCE_PREFIXES = ("datasets/", "code/", "kernels/", "c/", "competitions/", "models/")
SAMPLE_DATASET = "sample"
SAMPLE_DATASET_SLUG = "kdarts-cifar10-sample"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: str | int | float) -> float:
    """Return seconds for a duration such as 40, "40s", "30m" or "12h"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; use seconds or a string such as '30m' or '12h'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r}; use seconds or a string such as '40s', '30m' or '12h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def normalize_source(value: str) -> str:
    """Strip a `datasets/`-style prefix and check that a source reads `owner/slug`."""
    source = value.strip()
    for prefix in SOURCE_PREFIXES:
        if source.startswith(prefix):
            source = source[len(prefix) :]
            break
    parts = source.split("/")
    if len(parts) != 2 or not all(parts) or not SLUG_PATTERN.match(parts[1]):
        raise ValueError(f"invalid source {value!r}; expected 'owner/slug' with a 5-50 character lowercase slug")
    return source


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
    default_profile: str | None = None

    @field_validator("slug")
    @classmethod
    def _check_slug(cls, slug: str) -> str:
        if not SLUG_PATTERN.match(slug):
            raise ValueError(
                f"invalid slug {slug!r}; use 5 to 50 lowercase letters, digits and dashes, "
                "starting and ending with a letter or digit"
            )
        return slug

    @field_validator("session_limit", mode="before")
    @classmethod
    def _parse_session_limit(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        return value if value == SAMPLE_DATASET else normalize_source(value)

    @field_validator("datasets")
    @classmethod
    def _check_datasets(cls, values: list[str]) -> list[str]:
        return [normalize_source(value) for value in values]

    @property
    def accelerator(self) -> str | None:
        return None if self.machine_shape.lower() == "none" else self.machine_shape


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
        return self.kernel.dataset.split("/")[1]

    def dataset_sources(self, owner: str) -> list[str]:
        """Return every dataset to attach, as `owner/slug`."""
        main = f"{owner}/{SAMPLE_DATASET_SLUG}" if self.kernel.dataset == SAMPLE_DATASET else self.kernel.dataset
        return [main, *[source for source in self.kernel.datasets if source != main]]


_SPEC_TABLES = {"kernel", "params", "profiles"}


def find_spec(name: str, cwd: Path | None = None) -> Path:
    """Return the spec file for kernel `name`: ./kernels/<name>.toml first, then the built-in one."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SpecError(f"kernel spec {path} not found")
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


def load_spec(
    name: str, *, profile: str | None = None, overrides: list[str] | None = None, cwd: Path | None = None
) -> KernelSpec:
    """Load, merge and validate a spec, applying a profile and `key=value` overrides."""
    path = find_spec(name, cwd)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from error

    unknown = set(raw) - _SPEC_TABLES
    if unknown:
        raise SpecError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; allowed: kernel, params, profiles")
    kernel_table = dict(_table(raw, "kernel", path))
    params = dict(_table(raw, "params", path))
    profiles = _table(raw, "profiles", path)

    chosen = profile or kernel_table.get("default_profile")
    if chosen is not None:
        if chosen not in profiles:
            raise SpecError(
                f"{path}: profile {chosen!r} not found; profiles: {', '.join(sorted(profiles)) or 'none'}"
            )
        profile_table = dict(_table(profiles, chosen, path, prefix="profiles."))
        profile_params = profile_table.pop("params", {})
        if not isinstance(profile_params, dict):
            raise SpecError(f"{path}: profiles.{chosen}.params must be a table, got {profile_params!r}")
        kernel_table.update(profile_table)
        params.update(profile_params)

    for override in overrides or []:
        key, value = parse_override(override)
        if key.startswith("kernel."):
            kernel_table[key.removeprefix("kernel.")] = value
        else:
            params[key.removeprefix("params.")] = value

    try:
        settings = KernelSettings.model_validate(kernel_table)
    except ValidationError as error:
        raise SpecError(_describe(error, path, "kernel", kernel_table)) from error

    expected_slug = slugify(settings.title)
    if expected_slug != settings.slug:
        raise SpecError(
            f"{path}: kernel.title {settings.title!r} becomes the slug {expected_slug!r}, not kernel.slug "
            f"{settings.slug!r}; Kaggle files a kernel under its title's slug, so make them match"
        )
    return KernelSpec(name=path.stem, path=path, profile=chosen, kernel=settings, params=params)


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


def _table(raw: dict[str, Any], key: str, path: Path, prefix: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{path}: {prefix}{key} must be a table, got {value!r}")
    return value


def _describe(error: ValidationError, path: Path, table: str, values: dict[str, Any]) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        top = str(item["loc"][0]) if item["loc"] else ""
        shown = values.get(top, "<missing>")
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{table}.{key} = {shown!r}: {message}")
    return f"{path}: " + "; ".join(problems)
