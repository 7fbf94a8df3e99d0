"""The package version, in a module of its own so any layer can read it without importing the
public facade (``tempscope/__init__.py`` sits above everything it re-exports)."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's [project] version
