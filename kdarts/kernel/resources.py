"""Locate the built-in kernel specs and templates.

An installed wheel carries them in a `kdarts_bundled/` folder beside the package. An editable
install (a source checkout) reads the top-level `kernels/` and `templates/` folders directly.
"""

from __future__ import annotations

from pathlib import Path

import kdarts

_PACKAGE_DIR = Path(kdarts.__file__).parent


def builtin_folder(name: str) -> Path:
    """Return the built-in `kernels` or `templates` folder."""
    for candidate in (_PACKAGE_DIR.parent / "kdarts_bundled" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kdarts' built-in {name}/ folder is missing; reinstall kdarts")


def spec_folders(cwd: Path | None = None) -> list[Path]:
    """Return the folders searched for kernel specs, first match wins: ./kernels, then built-in."""
    folders = []
    local = (cwd or Path.cwd()) / "kernels"
    if local.is_dir():
        folders.append(local)
    builtin = builtin_folder("kernels")
    if builtin.resolve() not in [folder.resolve() for folder in folders]:
        folders.append(builtin)
    return folders


def template_folders(cwd: Path | None = None) -> list[Path]:
    """Return the folders searched for templates: ./templates, then built-in."""
    folders = []
    local = (cwd or Path.cwd()) / "templates"
    if local.is_dir():
        folders.append(local)
    builtin = builtin_folder("templates")
    if builtin.resolve() not in [folder.resolve() for folder in folders]:
        folders.append(builtin)
    return folders
