"""idcode: the unified citizen identity e-code."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("idcode")  # one source of truth: pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
