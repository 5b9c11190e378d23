"""The backend interface and its registry.

A backend runs kernel bundles somewhere (this machine, Kaggle) and stores datasets there. Backends
register under a name, and the CLI looks them up with `get_backend`. A new backend is therefore a
new class, not a new branch in the callers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from kdarts.errors import BackendError
from kdarts.kernel.render import Bundle

KernelState = Literal["queued", "running", "complete", "error", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"complete", "error", "cancelled"})


class KernelStatus(BaseModel):
    """Status of one pushed kernel version."""

    ref: str
    version: int
    state: KernelState
    message: str | None = None
    failing_cell: int | None = None
    error_name: str | None = None
    error_value: str | None = None
    cells_done: int | None = None
    cells_total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def describe(self) -> str:
        """Return a one-line summary, naming the failing cell and error when there is one."""
        text = f"{self.ref} v{self.version}: {self.state}"
        if self.cells_total and not self.terminal:
            text += f" ({self.cells_done or 0} of {self.cells_total} code cells done)"
        if self.failing_cell is not None:
            text += f"; notebook cell {self.failing_cell} raised {self.error_name or 'an error'}"
            if self.error_value:
                text += f": {self.error_value}"
        elif self.message:
            text += f"; {self.message}"
        return text


@dataclass(frozen=True)
class PushResult:
    """Result of a push: the kernel's reference, the version it created and where to see it."""

    ref: str
    version: int
    url: str | None = None


@dataclass(frozen=True)
class DatasetVersion:
    """A dataset version a backend stores."""

    ref: str
    version: int
    status: str


class Backend(abc.ABC):
    """Somewhere that runs kernel bundles and stores datasets."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def owner(self) -> str:
        """Return the user that owns pushed kernels and created datasets."""

    @abc.abstractmethod
    def push(self, bundle: Bundle, *, session_limit: float | None = None) -> PushResult:
        """Start a new version of the bundle's kernel and return at once."""

    @abc.abstractmethod
    def status(self, ref: str, version: int | None = None) -> KernelStatus:
        """Return the status of a version (the newest when `version` is None)."""

    @abc.abstractmethod
    def download_output(self, ref: str, version: int, target: Path) -> list[Path]:
        """Copy a version's output files, executed notebook and log into `target`."""

    @abc.abstractmethod
    def dataset_exists(self, ref: str) -> bool:
        """Return whether the dataset `owner/slug` exists."""

    @abc.abstractmethod
    def publish_dataset(self, ref: str, folder: Path, *, title: str, message: str = "") -> DatasetVersion:
        """Create the dataset, or add a version holding exactly the files under `folder`."""

    def latest_version(self, ref: str) -> int | None:
        """Return the newest pushed version of a kernel, or None when it was never pushed."""
        raise NotImplementedError(f"the {self.name} backend cannot list kernel versions")

    def latest_dataset_version(self, ref: str) -> int | None:
        """Return the newest version number of a dataset, or None when it does not exist."""
        raise NotImplementedError(f"the {self.name} backend cannot list dataset versions")

    def wait_dataset_ready(self, ref: str, version: int, *, timeout: float = 600.0) -> None:
        """Return once a dataset version can be attached to a kernel; raise BackendError on timeout."""


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator that makes a backend available under its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as `name`."""
    _load_builtin_backends()
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def backend_names() -> list[str]:
    """Return the names of the registered backends."""
    _load_builtin_backends()
    return sorted(_REGISTRY)


def _load_builtin_backends() -> None:
    # Importing a backend module registers it; optional backends may lack their client library.
    from kdarts.kernel.backends import colab, local  # noqa: F401

    try:
        from kdarts.kernel.backends import kaggle  # noqa: F401
    except ImportError:
        pass
