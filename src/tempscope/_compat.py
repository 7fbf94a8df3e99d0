"""The module paths of the flat layout, kept working for code written against it.

Until the package grouped its modules by layer (``engine/``, ``study/``, ``report/``), they sat
flat in ``tempscope/``. An import of an old path (``import tempscope.generation``) gives the
module that now holds that code, the same object (``tempscope.generation is
tempscope.engine.loop``), with a :class:`DeprecationWarning` that names the new path.
:mod:`tempscope` installs the finder when it is imported. ``tempscope.study`` and
``tempscope.report`` are packages now; their ``__init__`` re-exports the old modules' names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import FrameType, ModuleType

__all__ = ["MOVED", "install"]

#: ``{old dotted name: new dotted name}``
MOVED: dict[str, str] = {
    "tempscope.generation": "tempscope.engine.loop",
    "tempscope.models": "tempscope.engine.loader",
    "tempscope.gguf_cache": "tempscope.engine.gguf_cache",
    "tempscope.nexttoken": "tempscope.engine.nexttoken",
    "tempscope.generator": "tempscope.engine.generator",
    "tempscope.remote": "tempscope.engine.remote.client",
    "tempscope.remote_engine": "tempscope.engine.remote.engine",
    "tempscope.remote_wire": "tempscope.engine.remote.wire",
    "tempscope.results": "tempscope.study.results",
    "tempscope.metrics": "tempscope.study.metrics",
    "tempscope.corpus": "tempscope.study.corpus",
    "tempscope.degeneration": "tempscope.study.degeneration",
    "tempscope.calibration": "tempscope.study.calibration",
    "tempscope.calibration_study": "tempscope.study.calibration_study",
    "tempscope.plots": "tempscope.report.plots",
    "tempscope.degeneration_report": "tempscope.report.degeneration",
    "tempscope.calibration_report": "tempscope.report.calibration",
}


class _MovedLoader(importlib.abc.Loader):
    """Loads an old name as the module at its new name, leaving that module as it was."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} has moved to {self.new}; import it from there",
                      DeprecationWarning, stacklevel=_caller_level())
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old name's spec on the module; give it back its own,
        # so the module still says where it lives (pickling, reload, ``python -m``).
        module.__spec__ = self.spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED`; every other name is left to the next finder."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new))


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the import statement: past this module's
    frames and :func:`importlib.import_module`'s (the frames of the import machinery itself,
    ``<frozen importlib._bootstrap>``, :func:`warnings.warn` skips without counting them)."""
    frame: FrameType | None = sys._getframe(1)
    level = 0
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back
            continue
        level += 1
        if name not in (__file__, importlib.__file__):
            break
        frame = frame.f_back
    return level


def install() -> None:
    """Put the finder on :data:`sys.meta_path` (once), after the ordinary finders."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
