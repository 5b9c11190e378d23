"""kdarts: DARTS and knowledge-distilled DARTS on free notebook platforms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdarts")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
