"""The flat layout's module paths still import: the same module objects, with a warning."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import tempscope
from tempscope._compat import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_gives_the_moved_module_and_warns(old: str, new: str) -> None:
    module = importlib.import_module(new)
    sys.modules.pop(old, None)
    vars(tempscope).pop(old.rpartition(".")[2], None)
    with pytest.warns(DeprecationWarning, match=rf"{old} has moved to {new}"):
        moved = importlib.import_module(old)
    assert moved is module
    assert sys.modules[old] is module
    assert module.__name__ == module.__spec__.name == new  # the module keeps its own name


def test_the_old_import_forms_reach_the_same_objects() -> None:
    from tempscope.engine import loop
    from tempscope.engine.remote import client

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from tempscope.remote import RemoteClient

        from tempscope import generation

    assert generation is loop
    assert RemoteClient is client.RemoteClient


def test_new_paths_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for new in MOVED.values():
            importlib.import_module(new)


def test_the_warning_points_at_the_import() -> None:
    sys.modules.pop("tempscope.nexttoken", None)
    vars(tempscope).pop("nexttoken", None)
    with pytest.warns(DeprecationWarning) as caught:
        importlib.import_module("tempscope.nexttoken")
    assert caught[0].filename == __file__
