"""meowd: the meow daemon. A GPU-aware local task queue."""

__version__ = "0.1.0"
