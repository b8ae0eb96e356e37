"""The package's version, declared here only: pyproject.toml and ``__version__`` read it."""

__version__ = "0.1.0"
