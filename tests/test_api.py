from __future__ import annotations

import subprocess
import sys

import tempscope


def test_all_is_sorted_and_complete() -> None:
    assert tempscope.__all__ == sorted(tempscope.__all__)
    for name in tempscope.__all__:
        assert hasattr(tempscope, name), name


def test_py_typed_shipped() -> None:
    from importlib.resources import files

    assert files("tempscope").joinpath("py.typed").is_file()


def test_import_and_softmax_do_not_import_torch() -> None:
    code = (
        "import sys, tempscope; tempscope.softmax([1, 2]);"
        "from tempscope.cli import build_parser; build_parser();"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
