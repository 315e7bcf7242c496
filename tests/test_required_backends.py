"""Backends that CI installs fail the tests where missing, never skip them: every test takes its
optional libraries from ``conftest.require_backend`` (or asks ``has_backend``), which fail under
``SIMKIT_REQUIRE_BACKENDS=1``; ``pytest.importorskip`` or a test of ``find_spec`` would skip, or
check less, whatever CI asks for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conftest
from conftest import REQUIRED, require_backend

TESTS = Path(__file__).parent


#: Calls that skip a test, or part of one, where a library is missing.
_SKIPPERS = ("importorskip", "find_spec")


def _importorskips(path: Path) -> list[tuple[int, str, str]]:
    """``(line, call, argument)`` of every ``importorskip(...)`` or ``find_spec(...)`` call in
    ``path`` (the argument as written: a string or an expression)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in _SKIPPERS:
            argument = ast.unparse(node.args[0]) if node.args else ""
            found.append((node.lineno, name, argument))
    return sorted(found)


def test_no_test_skips_a_required_backend_by_importorskip():
    """A call whose module is a required backend, or is not written out (it may be one), is
    refused; a library CI does not install may still be skipped by it."""
    bad = [f"{path.name}:{line}: {call}({argument})"
           for path in sorted(TESTS.glob("*.py")) for line, call, argument in _importorskips(path)
           if not (argument[:1] in "'\"" and ast.literal_eval(argument) not in REQUIRED)]
    assert not bad, ("expected require_backend(NAME) from conftest for the backends CI installs "
                     f"({', '.join(REQUIRED)}), given {'; '.join(bad)}")


def test_the_guard_sees_importorskip_however_it_is_written(tmp_path):
    source = tmp_path / "test_x.py"
    source.write_text("import pytest\nfrom pytest import importorskip\n"
                      "def test_a():\n    pytest.importorskip('jax')\n"
                      "def test_b(lib):\n    importorskip(lib)\n"
                      "# pytest.importorskip('torch') in a comment is no call\n"
                      "import importlib.util\nif importlib.util.find_spec('numba'):\n    pass\n")
    assert _importorskips(source) == [(4, "importorskip", "'jax'"), (6, "importorskip", "lib"),
                                      (9, "find_spec", "'numba'")]


def test_a_missing_required_backend_fails_in_ci_and_skips_elsewhere(monkeypatch):
    missing = "simkit_no_such_backend"
    monkeypatch.setattr(conftest, "REQUIRED", (*REQUIRED, missing))
    monkeypatch.setattr(conftest, "REQUIRE_BACKENDS", True)
    with pytest.raises(pytest.fail.Exception, match=(
            rf"^{missing} is not installed \(No module named '{missing}'\) but "
            r"SIMKIT_REQUIRE_BACKENDS=1$")):
        require_backend(missing)
    monkeypatch.setattr(conftest, "REQUIRE_BACKENDS", False)
    with pytest.raises(pytest.skip.Exception, match=rf"^{missing} is not installed$"):
        require_backend(missing)


def test_require_backend_gives_the_module_and_refuses_a_name_it_does_not_know():
    import numpy

    assert require_backend("numpy") is numpy
    with pytest.raises(ValueError, match=r"^require_backend: expected one of numpy, jax, torch, "
                                         r"numba, dask.distributed, tensorboardX, given 'scipy'$"):
        require_backend("scipy")
