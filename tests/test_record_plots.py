"""Plots of recorded values: histogram images one bin drowns are drawn on a log scale, std bands
stay within min and max, plain xarray titles leave the checksum out, and a value with no
elements is bad input."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario
from simkit.errors import ScenarioError
from simkit.io import schema


def _drowned_histograms(path):
    """A field that is mostly zero: its zero bin holds far more than every other bin."""
    rng = np.random.default_rng(3)
    with simkit.record(path, {"s": {"every": 1, "fields": [], "summaries": {
            "w": ["mean", "std", "min", "max", {"histogram": {"bins": 20, "range": [0, 4]}}]}}}
            ) as rec:
        for i in range(12):
            w = np.zeros(2000)
            w[:40] = rng.exponential(0.5 + i / 10, 40)
            rec.step(i, w=w)
    return xr.open_dataset(path, group="s").load()


def test_a_histogram_image_drowned_by_one_bin_is_drawn_on_a_log_scale(in_tmp):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm

    from simkit import plot as plotting
    from simkit.cli import main

    s = _drowned_histograms("z.nc")
    fig = plotting._histogram_image(s, s.w_histogram, "t")
    mesh = fig.axes[0].collections[0]
    assert isinstance(mesh.norm, LogNorm)
    positive = s.w_histogram.values[s.w_histogram.values > 0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (positive.min(), positive.max())
    drawn = np.ma.asarray(mesh.get_array()).reshape(20, 12)
    np.testing.assert_array_equal(np.ma.getmaskarray(drawn), s.w_histogram.values.T == 0)
    assert fig.axes[1].get_ylabel() == "count per bin (1, log scale, empty bins white)"
    linear = plotting._histogram_image(s, s.w_histogram, "t", "linear").axes[0].collections[0]
    assert not isinstance(linear.norm, LogNorm)
    even = s.w_histogram.copy(data=np.ones_like(s.w_histogram.values))
    assert not isinstance(plotting._histogram_image(s, even, "t").axes[0].collections[0].norm,
                          LogNorm)
    assert isinstance(plotting._histogram_image(s, even, "t", "log").axes[0].collections[0].norm,
                      LogNorm)
    assert main(["plot", "z.nc", "--field", "w_histogram", "--color-scale", "log",
                 "-o", "log.png"]) == 0
    with pytest.raises(ScenarioError, match=r"^--color-scale: expected a colour scale auto, "
                                            r"linear, log, given 'cubic'$"):
        plotting.plot("z.nc", "w_histogram", color_scale="cubic")


def test_a_diffusing_hot_spot_histogram_is_drawn_on_a_log_scale(in_tmp):
    """Notebook 06's picture: a hot spot diffusing on a cold line. The zero bin holds up to 162
    values, three quarters of the other cells 6 or fewer: on a linear scale they are one
    colour."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm

    from simkit import plot as plotting

    x = np.linspace(0, 1, 200)
    u = np.exp(-((x - 0.5) / 0.05) ** 2)
    with simkit.record("d.nc", {"s": {"every": 1, "summaries": {
            "u": {"histogram": {"bins": 32, "range": [0.0, 1.0]}}}}}) as rec:
        for i in range(501):
            if i:
                u = u + 0.4 * (np.roll(u, 1) - 2 * u + np.roll(u, -1))
            rec.step(i, u=u)
    s = xr.open_dataset("d.nc", group="s").load()
    positive = s.u_histogram.values[s.u_histogram.values > 0]
    assert positive.max() == 162 and np.percentile(positive, 75) == 6
    mesh = plotting._histogram_image(s, s.u_histogram, "t").axes[0].collections[0]
    assert isinstance(mesh.norm, LogNorm)


def test_summary_std_band_stays_within_min_and_max(in_tmp):
    import matplotlib

    matplotlib.use("Agg")
    from simkit import plot as plotting

    s = _drowned_histograms("b.nc")
    mean, std, low = s.w_mean.values, s.w_std.values, s.w_min.values
    assert (mean - std < low).all()  # the field is >= 0, mean - std is not
    fig = plotting._summary_lines(s, "w", "t")
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed][0] == "mean ± std within min..max"
    np.testing.assert_array_equal(dashed[0].get_ydata(), np.minimum(mean + std, s.w_max.values))
    np.testing.assert_array_equal(dashed[1].get_ydata(), np.maximum(mean - std, low))


# The checksum is a coordinate of its own dimension: plain xarray titles leave it out.

def test_plain_xarray_plot_titles_leave_the_checksum_out(in_tmp):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simkit.io import recover

    result = simkit.run(heat_scenario(output="t.nc", outputs={
        "snap": {"every": 3, "fields": ["u"]}, "diag": {"every": 1, "diagnostics": ["energy"]}}))
    with xr.open_dataset(result.path, group="snap") as snap:
        assert schema.CHECKSUM in snap.coords and set(snap.data_vars) == {"u"}
        assert schema.CHECKSUM not in snap.u.coords
        snap.u.isel(step=2).plot()
        assert plt.gca().get_title() == "step = 6 [1], time = 1.2 [s]"
    plt.close("all")
    with xr.open_dataset(result.path, group="diag") as diag:
        assert schema.CHECKSUM in diag.coords and schema.CHECKSUM not in diag.energy.coords
    # Checked and cut with the captures as before: a torn last capture goes, with its checksum.
    with netCDF4.Dataset(result.path, "a") as ds:
        ds["snap"]["step"][5] = 15  # data and checksum missing: not whole
    assert recover(result.path) == {"snap": 5, "diag": 13}
    with netCDF4.Dataset(result.path) as ds:
        assert ds["snap"][schema.CHECKSUM].dimensions == (schema.CHECKSUM_DIM,)
        assert len(ds["snap"].dimensions[schema.CHECKSUM_DIM]) == 5


def test_plot_of_a_recorded_value_with_no_elements_is_bad_input(in_tmp, capsys):
    """A value of zero elements (shape (0,)) drew nothing and raised numpy's raw ValueError
    (zero-size array to reduction operation fmin), exit 1."""
    from simkit.cli import main

    with simkit.record("z.nc", {"s": {"every": 1}}) as rec:
        for i in range(3):
            rec.step(i, e=np.zeros((0,)), u=np.full(4, float(i)))
    assert main(["plot", "z.nc", "--field", "e", "-o", "e.png"]) == 2
    assert capsys.readouterr().err == ("simkit: error: z.nc: --field: expected a field or "
                                       "diagnostic with values to draw, given 'e' of shape "
                                       "(step: 3, e_dim0: 0), which holds none\n")
    assert not (in_tmp / "e.png").exists()
    assert main(["plot", "z.nc", "--field", "u", "-o", "u.png"]) == 0
