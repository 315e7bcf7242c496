"""Finding solvers by name: entry points read once per state of the path, and read again when a
package is installed."""

from __future__ import annotations

import os

import pytest

from simkit.errors import ScenarioError
from simkit.solver import available_solvers, load_solver
from solvers.heat2d import Heat2D


def test_a_solver_installed_after_a_lookup_is_found(tmp_path, monkeypatch):
    _package(tmp_path, "other", "")  # a folder of packages, as site-packages
    os.utime(tmp_path, ns=(0, 0))  # so that the folder made below changes its time, however fast
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "heat2d_again" not in available_solvers()
    with pytest.raises(ScenarioError, match="unknown solver"):
        load_solver("heat2d_again")
    # What installing a package does: a new dist-info folder on the path.
    _package(tmp_path, "heat2d_again", "[simkit.solvers]\nheat2d_again = solvers.heat2d:Heat2D\n")
    assert load_solver("heat2d_again") is Heat2D
    assert "heat2d_again" in available_solvers()
    assert load_solver("heat2d") is Heat2D


def _package(folder, name: str, entry_points: str) -> None:
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_files_written_beside_a_script_do_not_read_the_packages_again(tmp_path, monkeypatch):
    from simkit.solver import _registry

    monkeypatch.syspath_prepend(str(tmp_path))  # the folder a script runs in: no packages
    found = _registry.registered()
    os.utime(tmp_path, ns=(0, 0))
    (tmp_path / "run.nc").write_bytes(b"")
    assert _registry.registered() is found
