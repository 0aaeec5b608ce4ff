"""idcode: the unified citizen identity e-code."""

__version__ = "0.1.0"
