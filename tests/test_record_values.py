"""The recorder and summaries after a hostile try: histograms equal numpy.histogram in every dtype,
summaries are float64 whatever the library's defaults, a stream keeps everything by default, and
every failure leaves a file that says so."""

from __future__ import annotations

import shutil
import types

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario, require_backend
from simkit.errors import DiskFullError, ScenarioError
from simkit.io import netcdf as netcdf_module
from simkit.io import schema
from simkit.solver._summaries import Summary


def _on(backend, x):
    if backend == "torch":
        import torch

        return torch.asarray(x)
    if backend == "jax":
        import jax.numpy as jnp

        import simkit.backends.jax  # noqa: F401 - float64 needs x64

        return jnp.asarray(x)
    return x


def _uniform_and_its_edges(dtype):
    """30 uniform values, 12 on the linspace between their extremes, and numpy's own 13-bin
    edges of them: values on edges count in another bin when an edge is one ulp off."""
    a = np.random.default_rng(4).random(30).astype(dtype)
    return np.concatenate([a, np.linspace(a.min(), a.max(), 12, dtype=dtype),
                           np.histogram(a, bins=13)[1].astype(dtype)])


# A histogram without a range has numpy.histogram's edges and counts in every dtype.

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_recorder_histogram_without_range_equals_numpy_histogram(backend, dtype, in_tmp):
    x = _uniform_and_its_edges(dtype)
    want, edges = np.histogram(x, bins=13)
    with simkit.record("h.nc", {"s": {"every": 1, "summaries": {
            "u": {"histogram": {"bins": 13}}}}}) as rec:
        rec.step(0, u=_on(backend, x))
        rec.step(1, u=_on(backend, x[::-1].copy()))
    s = xr.open_dataset("h.nc", group="s")
    np.testing.assert_array_equal(s.u_bin_edge.values, edges.astype(np.float64))
    np.testing.assert_array_equal(s.u_histogram.values, [want, want])


def test_histogram_edges_fitted_to_data_follow_numpy_in_float32():
    x = _uniform_and_its_edges("float32")
    fitted = Summary("u", "histogram", bins=13, dtype="float32").with_range_of(x)
    want, edges = np.histogram(x, bins=13)
    assert fitted.edges().dtype == np.float32
    np.testing.assert_array_equal(fitted.edges(), edges)
    np.testing.assert_array_equal(fitted.compute(x), want)
    # A constant: numpy widens by 0.5 in the values' dtype.
    flat = Summary("u", "histogram", bins=3, dtype="float32").with_range_of(
        np.full(4, 0.1, dtype=np.float32))
    np.testing.assert_array_equal(flat.edges(), np.histogram(np.full(4, 0.1, np.float32), 3)[1])
    # A range given as numbers keeps numpy's edges of that range.
    given = Summary("u", "histogram", bins=13, range=(0.1, 0.7), dtype="float32")
    np.testing.assert_array_equal(given.edges(), np.histogram(x, bins=13, range=(0.1, 0.7))[1])


def test_float32_run_histogram_without_range_equals_numpy_histogram(backend, in_tmp):
    result = simkit.run(heat_scenario(backend=backend, dtype="float32", steps=3, outputs={
        "snap": {"every": 1, "fields": ["u"]},
        "s": {"every": 1, "summaries": {"u": {"histogram": {"bins": 13}}}}}))
    u = xr.open_dataset(result.path, group="snap").u.values
    s = xr.open_dataset(result.path, group="s")
    assert u.dtype == np.float32
    edges = np.histogram(u[0], bins=13)[1]
    np.testing.assert_array_equal(s.u_bin_edge.values, edges.astype(np.float64))
    np.testing.assert_array_equal(s.u_histogram.values,
                                  [np.histogram(v, bins=edges)[0] for v in u])


# Summaries of JAX arrays are float64 with JAX's x64 off.

def test_summaries_of_jax_arrays_are_float64_with_x64_off(in_tmp):
    jax = require_backend("jax")
    import jax.numpy as jnp

    x = np.random.default_rng(1).random(1000).astype(np.float32) + np.float32(1000)
    wide = x.astype(np.float64)
    qs = [0.1, 0.37, 0.5, 0.9]
    with jax.enable_x64(False):
        value = jnp.asarray(x)
        assert value.dtype == jnp.float32
        with simkit.record("j.nc", {"s": {"every": 1, "summaries": {
                "u": ["mean", "std", "l2", {"quantiles": qs}]}}}) as rec:
            rec.step(0, u=value)
    s = xr.open_dataset("j.nc", group="s").isel(step=0)
    assert s.u_mean.dtype == np.float64
    np.testing.assert_allclose(s.u_mean.values, wide.mean(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(s.u_std.values, wide.std(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.u_l2.values, np.linalg.norm(wide), rtol=1e-15, atol=0)
    np.testing.assert_allclose(s.u_quantiles.values, np.quantile(wide, qs), rtol=1e-15, atol=0)


# A stream naming no fields or diagnostics keeps everything, as a scenario stream does.

def test_a_stream_without_fields_keeps_every_value_the_loop_passes(in_tmp):
    outputs = {"all": {"every": 2},
               "stats": {"every": 1, "summaries": {"u": ["mean"]}},
               "only": {"every": 1, "fields": [], "summaries": {"u": ["max"]}},
               "mid": {"every": 2, "stage": "half"}}
    with simkit.record("e.nc", outputs) as rec:
        u = np.zeros(3)
        for i in range(5):
            if i:
                with rec.stage("half"):
                    h = u * 0.5
                    rec.probe("h", h)
                    rec.probe("hsum", float(h.sum()))
                    h += 100.0  # in place after the probe: the capture is a copy
            u = u + 1.0
            rec.probe("loose", 2.0 * i)
            rec.step(i, u=u, loss=1.0 / (i + 1), n=np.int32(i))
    tree = xr.open_datatree("e.nc")
    every = tree["all"].to_dataset()
    assert sorted(every.data_vars) == ["loose", "loss", "n", "u"]
    assert list(every.step.values) == [0, 2, 4] and every.n.dtype == np.int32
    np.testing.assert_array_equal(every.u.values, [[1, 1, 1], [3, 3, 3], [5, 5, 5]])
    np.testing.assert_array_equal(every.loss.values, [1, 1 / 3, 1 / 5])
    np.testing.assert_array_equal(every.loose.values, [0, 4, 8])
    assert sorted(tree["stats"].to_dataset().data_vars) == ["loose", "loss", "n", "u", "u_mean"]
    assert sorted(tree["only"].to_dataset().data_vars) == ["u_max"]
    mid = tree["mid"].to_dataset()
    assert sorted(mid.data_vars) == ["h", "hsum"] and list(mid.step.values) == [2, 4]
    np.testing.assert_array_equal(mid.h.values, [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(mid.hsum.values, [3, 6])


def test_a_stream_without_fields_needs_a_value_at_the_first_step(in_tmp):
    rec = simkit.record("z.nc", {"all": {"every": 1}})
    with pytest.raises(ScenarioError, match=r"^outputs.all: expected values to keep \(a stream "
                                            r"without fields or diagnostics keeps every value "
                                            r"the first step passes\), given none at step 0$"):
        rec.step(0)
    rec.close()
    with pytest.raises(ScenarioError, match=r"^outputs.s: expected at least one field, "
                                            r"diagnostic or summary to capture, given none$"):
        simkit.record("z.nc", {"s": {"every": 1, "fields": []}})


def _status(path):
    with netCDF4.Dataset(path) as ds:
        attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        steps = {name: group["step"][:] for name, group in ds.groups.items()}
        sizes = {name: len(group.dimensions["step"]) for name, group in ds.groups.items()}
    for name, values in steps.items():  # no torn capture: every capture has its step
        assert not np.ma.is_masked(values) and len(values) == sizes[name], name
    return attrs[schema.ATTR_STATUS], attrs.get(schema.ATTR_ERROR), \
        {name: [int(v) for v in values] for name, values in steps.items()}


# A step beyond what a file holds is refused before anything is written.

def test_a_step_too_large_is_refused_and_leaves_no_torn_capture(in_tmp):
    with pytest.raises(ScenarioError, match=r"^step: expected a whole step number from 0 to "
                                            r"9007199254740992, given 1180591620717411303424$"), \
            simkit.record("big.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        rec.step(0, u=np.zeros(2))
        rec.step(1, u=np.ones(2))
        rec.step(2**70, u=np.ones(2))
    status, error, steps = _status("big.nc")
    assert (status, steps) == (schema.STATUS_FAILED, {"s": [0, 1]})
    assert error.startswith("ScenarioError: step: expected a whole step number")
    # Refused, the recorder goes on.
    with simkit.record("on.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        rec.step(0, u=np.zeros(2))
        with pytest.raises(ScenarioError, match="given 18446744073709551615"):
            rec.step(np.uint64(2**64 - 1), u=np.ones(2))
        rec.step(1, u=np.ones(2))
    assert _status("on.nc")[::2] == (schema.STATUS_COMPLETE, {"s": [0, 1]})


# Whatever ends a recording, its file says failed or interrupted, never running.

def test_an_error_while_closing_marks_the_file_failed(in_tmp):
    with pytest.raises(ScenarioError, match=r"^outputs.l: expected the value 'v' that stream 'l' "
                                            r"keeps at step 2, given u$"), \
            simkit.record("c.nc", {"s": {"every": 1, "fields": ["u"]},
                                   "l": {"last": True, "fields": ["v"]}}) as rec:
        rec.step(0, u=np.zeros(2), v=1.0)
        rec.step(1, u=np.zeros(2), v=2.0)
        rec.step(2, u=np.zeros(2))
    status, error, steps = _status("c.nc")
    assert (status, steps) == (schema.STATUS_FAILED, {"s": [0, 1, 2], "l": []})
    assert "expected the value 'v'" in error


def test_a_recorder_on_a_full_disk_marks_the_file_failed_and_says_what_to_do(in_tmp, monkeypatch):
    free = {"bytes": 1 << 40}
    real = shutil.disk_usage
    monkeypatch.setattr(netcdf_module, "shutil", types.SimpleNamespace(
        disk_usage=lambda path: real(path)._replace(free=free["bytes"])))
    with pytest.raises(DiskFullError) as caught, \
            simkit.record("full.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        for i in range(10):
            if i == 4:
                free["bytes"] = 0
            rec.step(i, u=np.full(3, float(i)))
            rec.flush()
    message = str(caught.value)
    assert "simkit resume" not in message
    assert message.endswith("captures intact: s: 4; a recording cannot be resumed: free space "
                            "and run the loop again (the captures so far stay readable in "
                            "full.nc)"), message
    status, error, steps = _status("full.nc")
    assert (status, steps) == (schema.STATUS_FAILED, {"s": [0, 1, 2, 3]})
    assert error.startswith("DiskFullError: disk full writing full.nc")


# Values a file cannot hold, and outputs that are not files, are refused cleanly.

@pytest.mark.parametrize(("value", "given"), [
    (np.zeros(3, dtype=complex), "complex128"), (np.array([1, None, 2], dtype=object), "object"),
    (np.array(["a", "b"]), "str"), ("text", "str"), (1j, "complex128")])
def test_values_a_file_cannot_hold_are_refused_naming_them(value, given, in_tmp):
    with pytest.raises(ScenarioError, match=rf"^u: expected real numbers \(booleans, integers "
                                            rf"or floats\) to record, given an array of "
                                            rf"{given}$"), \
            simkit.record("v.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        rec.step(0, u=value)


def test_complex_torch_values_are_refused_and_float_to_complex_is_not_cast(in_tmp):
    torch = require_backend("torch")
    with pytest.raises(ScenarioError, match=r"^u: expected real numbers .* given an array of "
                                            r"complex64$"), \
            simkit.record("t.nc", {"s": {"every": 1, "diagnostics": ["u"]}}) as rec:
        rec.step(0, u=torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ScenarioError, match=r"^outputs.s: expected 'u' as float64 \(as first "
                                            r"seen\) or a type that casts to it without loss of "
                                            r"kind, given complex128$"), \
            simkit.record("c.nc", {"s": {"every": 1, "fields": ["u"]}}) as rec:
        rec.step(0, u=np.zeros(2))
        rec.step(1, u=lambda: np.zeros(2) + 1j)
    status, error, steps = _status("c.nc")
    assert (status, steps) == (schema.STATUS_FAILED, {"s": [0]})
    # A summary's field, too: its values changing kind are refused, not cast.
    with pytest.raises(ScenarioError, match=r"^outputs.m: expected 'w' as float64 .* given "
                                            r"complex128$"), \
            simkit.record("m.nc", {"m": {"every": 1, "fields": [], "summaries": {
                "w": ["mean"]}}}) as rec:
        rec.step(0, w=np.ones(2))
        rec.step(1, w=lambda: np.ones(2) * 1j)


def test_an_output_that_is_not_a_file_is_refused_naming_it(in_tmp):
    (in_tmp / "folder").mkdir()
    (in_tmp / "plain").write_text("x")
    for path, overwrite, message in (
            ("folder", True, "path: expected a file to write, given 'folder', a directory"),
            ("plain/run.nc", False, "path: expected a path in a directory, given "
                                    "'plain/run.nc', under 'plain', which is not a directory")):
        with pytest.raises(ScenarioError, match=f"^{message}$"):
            simkit.record(path, {"s": {"every": 1, "fields": ["u"]}}, overwrite=overwrite)
    assert (in_tmp / "folder").is_dir() and (in_tmp / "plain").read_text() == "x"


@pytest.mark.parametrize(("outputs", "values", "key"), [
    ({"s": {"every": 1}}, {"u\n": 1.0}, "outputs.s.fields"),
    ({"s\n": {"every": 1}}, {"u": 1.0}, "outputs.s\n"),
    ({"s": {"every": 1, "fields": ["u\n"]}}, {"u\n": np.ones(2)}, "outputs.s.fields"),
    ({"s": {"every": 1}}, {"x" * 300: 1.0}, "outputs.s.fields"),
    ({"s" * 300: {"every": 1}}, {"u": 1.0}, "outputs." + "s" * 300),
])
def test_value_and_stream_names_a_file_cannot_hold_are_refused(outputs, values, key, in_tmp):
    """A trailing newline (``$`` matched before it) or a name over netCDF's limit reached the
    file and raised a raw RuntimeError (NetCDF: Name contains illegal characters, NC_MAX_NAME
    exceeded)."""
    with pytest.raises(ScenarioError) as caught, simkit.record("n.nc", outputs) as rec:
        rec.step(0, **values)
    assert caught.value.key == key
    assert "letters, digits and _, at most 240 characters" in caught.value.message


