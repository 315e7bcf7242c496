"""Plots and TensorBoard exports of a run file whose last capture is torn (its checksum wrong,
as a writer dying mid-capture leaves it) show the whole captures only, as every reader counts
them."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

import simkit
from conftest import heat_scenario, require_backend
from simkit.io import open_reader, schema


def _torn_crc(path: Path, stream: str = "snap") -> list[int]:
    """Corrupt the checksum of the last capture of ``stream``; returns the steps still whole."""
    with netCDF4.Dataset(path, "a") as ds:
        crc = ds[stream][schema.CHECKSUM]
        last = len(ds[stream].dimensions[schema.STEP_DIM]) - 1
        crc[last] = (int(crc[last]) + 1) % 2**32
        steps = [int(s) for s in ds[stream][schema.STEP][:]]
    with open_reader(path) as reader:
        whole = reader.whole_counts()[stream]
    assert whole == len(steps) - 1
    return steps[:whole]


def test_plot_of_a_file_with_a_torn_last_capture_draws_the_whole_ones(in_tmp, monkeypatch):
    import simkit.plot

    path = simkit.run(heat_scenario()).path
    whole = _torn_crc(path)
    drawn = []
    figure = simkit.plot._field_figure

    def recording(da, title, panels):
        drawn.append([int(s) for s in da.step.values])
        return figure(da, title, panels)

    monkeypatch.setattr(simkit.plot, "_field_figure", recording)
    out = simkit.plot.plot(path, "u", output="u.png")
    assert out.read_bytes().startswith(b"\x89PNG")
    assert drawn == [whole]


def test_tensorboard_of_a_file_with_a_torn_last_capture_has_the_whole_ones(in_tmp):
    require_backend("tensorboardX")
    from test_summaries import _events

    from simkit.tensorboard import to_tensorboard

    path = simkit.run(heat_scenario()).path
    whole = _torn_crc(path)
    to_tensorboard(path, in_tmp / "logs")
    images = sorted({event.step for event in _events(in_tmp / "logs")
                     for value in event.summary.value
                     if value.tag == "snap/u" and value.WhichOneof("value") == "image"})
    assert images == whole
    assert len(whole) >= 2 and np.all(np.diff(whole) > 0)
