"""Diagnostics and probes added by a scenario as ``module:function``, without subclassing."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import xarray as xr
import yaml

import simkit
from conftest import heat_scenario
from simkit.errors import ScenarioError

_MODULE = textwrap.dedent('''
    from array_api_compat import array_namespace


    def spread(state):
        xp = array_namespace(state["u"])
        return xp.max(state["u"]) - xp.min(state["u"])


    def lap_squared(state):
        return state["laplacian"] * state["laplacian"]
''')


def _scenario(tmp_path, backend, name="probe_mod", **extra):
    """A scenario file beside a module of its own (found without PYTHONPATH)."""
    (tmp_path / f"{name}.py").write_text(_MODULE)
    data = heat_scenario(backend=backend, steps=6, output=str(tmp_path / "p.nc"), outputs={
        "snap": {"every": 2, "fields": ["u"], "diagnostics": ["spread"]},
        "mid": {"every": 3, "stage": "laplacian", "fields": ["laplacian", "lap2"],
                "summaries": {"lap2": ["max"]}}},
        diagnostics={"spread": {"function": f"{name}:spread", "units": "K",
                                "long_name": "max minus min of u"}},
        probes={"lap2": {"stage": "laplacian", "function": f"{name}:lap_squared",
                         "units": "K2 m-4"}}, **extra)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_added_diagnostic_and_probe_are_computed_in_the_step(backend, tmp_path, in_tmp):
    result = simkit.run(_scenario(tmp_path, backend, name=f"probe_mod_{backend}"),
                        allow_import=True)
    snap = xr.open_dataset(result.path, group="snap")
    np.testing.assert_allclose(snap.spread.values, snap.u.max(("y", "x")).values
                               - snap.u.min(("y", "x")).values, rtol=1e-14)
    assert snap.spread.attrs["units"] == "K"
    assert snap.spread.attrs["long_name"] == "max minus min of u"
    mid = xr.open_dataset(result.path, group="mid")
    assert list(mid.step.values) == [3, 6]
    np.testing.assert_array_equal(mid.lap2.values, mid.laplacian.values ** 2)
    assert mid.lap2.dims == ("step", "y", "x") and mid.lap2.attrs["units"] == "K2 m-4"
    np.testing.assert_array_equal(mid.lap2_max.values, mid.lap2.max(("y", "x")).values)


def test_references_need_the_import_opt_in(tmp_path, in_tmp, monkeypatch):
    monkeypatch.delenv("SIMKIT_ALLOW_IMPORT", raising=False)
    with pytest.raises(ScenarioError, match=r"s.yaml:\d+: diagnostics.spread.function: expected "
                                            r"no import unless allowed, given 'probe_mod:spread'"):
        simkit.run(_scenario(tmp_path, "numpy"))


@pytest.mark.parametrize(("extra", "message"), [
    ({"diagnostics": {"energy": "probe_mod:spread"}},
     r"diagnostics.energy: expected a new name"),
    ({"probes": {"p": {"stage": "laplace", "function": "probe_mod:lap_squared"}}},
     r'probes.p.stage: unknown stage \(did you mean "laplacian"\?\)'),
    ({"diagnostics": {"d": {"function": "probe_mod:nothing"}}},
     r"diagnostics.d.function: expected an importable 'module:function', given "
     r"'probe_mod:nothing' \(AttributeError"),
    ({"diagnostics": {"d": {"function": "probe_mod:spread", "unit": "K"}}},
     r'diagnostics.d.unit: unknown key \(did you mean "units"\?\)'),
])
def test_bad_references_are_refused_naming_the_key(tmp_path, in_tmp, extra, message):
    path = _scenario(tmp_path, "numpy")
    data = yaml.safe_load(path.read_text())
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=message):
        simkit.run(path, allow_import=True)
