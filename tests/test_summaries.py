"""Summaries on the device: histograms equal numpy.histogram exactly, quantiles numpy.quantile to
rounding, every backend agrees, and scenario streams store them as (step,) / (step, bin)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario, require_backend
from simkit.errors import ScenarioError
from simkit.solver._summaries import Summary, parse_summaries


def _convert(backend, dtype="float64"):
    if backend == "torch":
        import torch

        return lambda a: torch.asarray(np.asarray(a, dtype=dtype))
    if backend == "jax":
        import jax.numpy as jnp

        import simkit.backends.jax  # noqa: F401 - float64 needs x64

        return lambda a: jnp.asarray(np.asarray(a, dtype=dtype))
    return lambda a: np.asarray(a, dtype=dtype)


def _samples(dtype):
    rng = np.random.default_rng(4)
    x = rng.normal(0.5, 0.4, size=(37, 23)).astype(dtype)
    # Values on edges (bins of 1/32 are exact in binary), at both ends and outside the range.
    x[0, :6] = [0.0, 1.0, 0.5, 0.25, -0.1, 1.1]
    x[1, :3] = [1.0 / 32, 31.0 / 32, np.nextafter(np.asarray(1.0, dtype), 0)]
    return x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("bins", "low_high"), [(32, (0.0, 1.0)), (7, (-0.3, 0.9)), (1, (0, 2)),
                                               (3, (-3.0, -2.9))])
def test_histogram_on_device_equals_numpy_histogram_exactly(backend, dtype, bins, low_high):
    summary = Summary("u", "histogram", bins=bins, range=low_high, dtype=dtype)
    # Every edge and its neighbours: where a bin index from the bin width alone goes wrong
    # (not the subnormal neighbours of 0, which XLA on CPU flushes to zero).
    edges = summary.edges()
    away = edges[edges != 0]
    near = np.concatenate([edges, np.nextafter(away, -np.inf), np.nextafter(away, np.inf)])
    x = np.concatenate([_samples(dtype).ravel(), near.astype(dtype)])
    got = np.asarray(summary.compute(_convert(backend, dtype)(x)))
    want, edges = np.histogram(x, bins=bins, range=low_high)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(summary.edges(), edges)


def test_quantiles_and_moments_equal_numpy_to_rounding(backend):
    x = _samples("float64")
    qs = [0.0, 0.01, 0.25, 0.5, 0.75, 0.999, 1.0]
    device = _convert(backend)(x)
    found = {s.kind: np.asarray(s.compute(device)) for s in parse_summaries(
        {"u": ["mean", "min", "max", "std", "l2", {"quantiles": qs}]})}
    np.testing.assert_allclose(found["quantiles"], np.quantile(x, qs), rtol=1e-15, atol=0)
    np.testing.assert_allclose(found["mean"], x.mean(), rtol=1e-14)
    np.testing.assert_allclose(found["std"], x.std(), rtol=1e-13)
    np.testing.assert_allclose(found["l2"], np.linalg.norm(x), rtol=1e-14)
    assert found["min"] == x.min() and found["max"] == x.max()


def test_histogram_range_from_the_first_value_follows_numpy():
    summary = Summary("u", "histogram", bins=4).with_range_of(np.array([2.0, 6.0, 3.0]))
    np.testing.assert_array_equal(summary.edges(), np.histogram([2.0, 6.0, 3.0], bins=4)[1])
    flat = Summary("u", "histogram", bins=2).with_range_of(np.full(3, 7.0))
    assert flat.range == (6.5, 7.5) == tuple(np.histogram(np.full(3, 7.0), bins=2)[1][[0, -1]])


@pytest.mark.parametrize(("spec", "message"), [
    ({"u": ["maen"]}, r'summaries.u: unknown summary \(did you mean "mean"\?\)'),
    ({"u": [{"histogram": {"bins": 0}}]}, r"summaries.u.histogram.bins: expected a whole number "
                                          r"of bins from 1 to 4096, given 0"),
    ({"u": [{"histogram": {"bins": 4, "range": [1, 0]}}]},
     r"summaries.u.histogram.range: expected \[low, high\] with finite low < high"),
    ({"u": [{"quantiles": [0.5, 1.5]}]}, r"summaries.u.quantiles: expected a list of 1 to 4096 "
                                         r"probabilities in \[0, 1\], given \[0.5, 1.5\]"),
    ({"u": ["histogram"]}, r"summaries.u: expected \{histogram: ...\} with its settings"),
    ({"u": ["mean", "mean"]}, r"summaries: expected each summary once per field, given u_mean"),
])
def test_bad_summaries_are_refused_naming_the_key(spec, message):
    with pytest.raises(ScenarioError, match=message):
        parse_summaries(spec)


_SUMMARIES = {"u": ["mean", "min", "max", "std", "l2", {"quantiles": [0.1, 0.5, 0.9]},
                    {"histogram": {"bins": 16}}]}


def _summary_run(backend, name):
    return simkit.run(heat_scenario(backend=backend, output=name, outputs={
        "snap": {"every": 3, "fields": ["u"]},
        "mid": {"every": 4, "stage": "laplacian", "fields": ["laplacian"],
                "summaries": {"laplacian": [{"histogram": {"bins": 8, "range": [-1, 1]}}]}},
        "s": {"every": 1, "summaries": _SUMMARIES}}))


def test_scenario_stream_summaries_are_stored_per_step_with_bin_coordinates(backend, in_tmp):
    result = _summary_run(backend, "h.nc")
    snap = xr.open_dataset(result.path, group="snap")
    s = xr.open_dataset(result.path, group="s")
    assert s.u_histogram.dims == ("step", "u_bin") and s.u_mean.dims == ("step",)
    assert s.u_quantiles.dims == ("step", "u_quantile")
    np.testing.assert_array_equal(s.u_quantile.values, [0.1, 0.5, 0.9])
    assert s.u_histogram.attrs["units"] == "1" and s.u_mean.attrs["units"] == "K"
    assert s.u_bin_edge.attrs["units"] == "K" and s.u_bin.sizes["u_bin"] == 16
    # No range given: fixed from the initial state, as numpy.histogram would choose it.
    u0 = xr.open_dataset(result.path, group="snap").u.isel(step=0).values
    np.testing.assert_array_equal(s.u_bin_edge.values, np.histogram(u0, bins=16)[1])
    u = snap.u.values
    at = s.sel(step=snap.step)
    np.testing.assert_array_equal(at.u_histogram.values,
                                  [np.histogram(x, bins=s.u_bin_edge.values)[0] for x in u])
    np.testing.assert_allclose(at.u_quantiles.values,
                               [np.quantile(x, [0.1, 0.5, 0.9]) for x in u], rtol=1e-14)
    np.testing.assert_allclose(at.u_std.values, u.std(axis=(1, 2)), rtol=1e-12)
    mid = xr.open_dataset(result.path, group="mid")
    np.testing.assert_array_equal(
        mid.laplacian_histogram.values,
        [np.histogram(x, bins=8, range=(-1, 1))[0] for x in mid.laplacian.values])


def test_summaries_agree_between_backends(in_tmp):
    for name in ("jax", "torch"):
        require_backend(name)
    files = {b: _summary_run(b, f"{b}.nc").path for b in ("numpy", "jax", "torch")}
    want = xr.open_dataset(files["numpy"], group="s")
    for backend in ("jax", "torch"):
        got = xr.open_dataset(files[backend], group="s")
        np.testing.assert_array_equal(got.u_histogram.values, want.u_histogram.values)
        for var in ("u_mean", "u_min", "u_max", "u_std", "u_l2", "u_quantiles"):
            np.testing.assert_allclose(got[var].values, want[var].values, rtol=1e-12,
                                       err_msg=f"{backend} {var}")


def test_scenario_summary_errors_name_the_stream(in_tmp):
    with pytest.raises(ScenarioError, match=r"outputs.s.summaries: unknown field \(did you mean "
                                            r"\"u\"\?\)"):
        simkit.run(heat_scenario(outputs={"s": {"every": 1, "summaries": {"uu": ["mean"]}}}))
    with pytest.raises(ScenarioError, match=r"outputs.b.summaries: expected one histogram of "
                                            r"'u' in every stream, given another in "
                                            r"outputs.a.summaries"):
        simkit.run(heat_scenario(outputs={
            "a": {"every": 1, "summaries": {"u": [{"histogram": {"bins": 4}}]}},
            "b": {"every": 2, "summaries": {"u": [{"histogram": {"bins": 8}}]}}}))
    with pytest.raises(ScenarioError, match=r"expected a range for the histogram of "
                                            r"'laplacian'"):
        simkit.run(heat_scenario(outputs={"m": {"every": 1, "stage": "laplacian", "summaries": {
            "laplacian": [{"histogram": {"bins": 4}}]}}}))


# ---------------------------------------------------------------- plots and TensorBoard


def _recorded_summaries(path):
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, (16, 12))
    outputs = {"s": {"every": 1, "diagnostics": ["loss"],
                     "summaries": {"w": ["mean", "min", "max", "std",
                                         {"quantiles": [0.1, 0.5, 0.9]},
                                         {"histogram": {"bins": 12, "range": [-4, 4]}}]}},
               "f": {"every": 4, "fields": ["w"]}}
    with simkit.record(path, outputs) as rec:
        for i in range(13):
            rec.step(i, w=x * (1 + i / 10), loss=1.0 / (i + 1))
    return x


def test_plot_draws_a_histogram_over_time_and_summary_bands(in_tmp):
    import matplotlib

    matplotlib.use("Agg")
    from simkit import plot as plotting

    _recorded_summaries("r.nc")
    s = xr.open_dataset("r.nc", group="s").load()
    fig = plotting._histogram_image(s, s.w_histogram, "t")
    mesh = fig.axes[0].collections[0]
    # One column per capture, one row per bin, at the file's bin edges.
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(12, 13),
                                  s.w_histogram.values.T)
    np.testing.assert_array_equal(mesh.get_coordinates()[:, 0, 1], s.w_bin_edge.values)
    fig = plotting._summary_lines(s, "w", "t")
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines}
    np.testing.assert_array_equal(lines["mean"], s.w_mean.values)
    np.testing.assert_array_equal(lines["median"], s.w_quantiles.values[:, 1])
    bands = [c.get_label() for c in fig.axes[0].collections]
    assert bands == ["min..max", "q0.1..q0.9"]
    assert plotting.plot("r.nc", "w_histogram").name == "r_w_histogram.png"
    assert plotting.plot("r.nc", "w", summary=True, output="bands.png").exists()
    from simkit.cli import main

    assert main(["plot", "r.nc", "--field", "w", "--summary", "-o", "cli.png"]) == 0
    with pytest.raises(ScenarioError, match="--field: expected a field with summaries, given "
                                            "'loss'"):
        plotting.plot("r.nc", "loss", summary=True)


def _events(logdir):
    """Every event of the TensorBoard files under ``logdir`` (TFRecord framing, read plainly)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


def test_tensorboard_events_hold_the_scalars_and_histograms_of_the_file(in_tmp):
    require_backend("tensorboardX")
    from simkit.cli import main

    _recorded_summaries("r.nc")
    assert main(["tensorboard", "r.nc", "logs"]) == 0
    scalars, histograms, images = {}, {}, {}
    for event in _events(in_tmp / "logs"):
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
            elif kind == "histo":
                histograms[(value.tag, event.step)] = value.histo
            elif kind == "image":
                images[(value.tag, event.step)] = value.image
    s = xr.open_dataset("r.nc", group="s").load()
    steps = list(s.step.values)
    for var in ("loss", "w_mean", "w_min", "w_max", "w_std"):
        series = scalars[f"s/{var}"]
        assert sorted(series) == steps
        np.testing.assert_array_equal([series[k] for k in steps],
                                      s[var].values.astype(np.float32))
    median = scalars["s/w_quantiles/q0.5"]
    np.testing.assert_array_equal([median[k] for k in steps],
                                  s.w_quantiles.values[:, 1].astype(np.float32))
    for i, step in enumerate(steps):
        histo = histograms[("s/w_histogram", step)]
        np.testing.assert_array_equal(histo.bucket, s.w_histogram.values[i])
        np.testing.assert_array_equal(histo.bucket_limit, s.w_bin_edge.values[1:])
        assert histo.num == s.w_histogram.values[i].sum()
    assert sorted(k for t, k in images if t == "f/w") == [0, 4, 8, 12]
    assert (images[("f/w", 0)].height, images[("f/w", 0)].width) == (16, 12)


def test_tensorboard_without_tensorboardx_says_what_to_install(in_tmp, monkeypatch):
    import builtins

    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    from simkit.tensorboard import to_tensorboard

    _recorded_summaries("r.nc")
    with pytest.raises(ScenarioError, match=r"tensorboard: expected the optional package "
                                            r"tensorboardX \(pip install 'simkit\[tensorboard\]'\)"):
        to_tensorboard("r.nc", "logs")
