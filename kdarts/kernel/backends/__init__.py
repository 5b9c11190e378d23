"""Backends that run kernel bundles: `local` (this machine, the default) and `kaggle`."""

from kdarts.kernel.backends.base import (
    Backend,
    DatasetVersion,
    KernelStatus,
    PushResult,
    backend_names,
    get_backend,
    register_backend,
)

__all__ = [
    "Backend",
    "DatasetVersion",
    "KernelStatus",
    "PushResult",
    "backend_names",
    "get_backend",
    "register_backend",
]
