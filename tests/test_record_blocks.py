"""A recording's captures go to the writer in blocks through the driver's committer: held on
the host until a block is full, ``flush_seconds`` old, ``flush()`` or the end; the file then
holds exactly what capture by capture would have written."""

from __future__ import annotations

import time

import numpy as np
import pytest

import simkit
from simkit.driver import commit_captures
from simkit.io import open_reader


def _whole(path, stream):
    with open_reader(path) as reader:
        return reader.captures(stream)


def test_captures_are_held_until_flush_then_all_on_disk(tmp_path):
    path = tmp_path / "r.nc"
    with simkit.record(path, {"s": {"every": 1, "diagnostics": ["loss"]}},
                       flush_seconds=3600) as rec:
        for i in range(10):
            rec.step(i, loss=float(i))
        # The file is laid out at the first capture, which goes with it; the rest are held.
        assert len(_whole(path, "s").steps) <= 1
        rec.flush()
        kept = _whole(path, "s")
        assert kept.steps.tolist() == list(range(10))
        np.testing.assert_array_equal(kept.arrays["loss"], np.arange(10.0))
        for i in range(10, 13):
            rec.step(i, loss=float(i))
    assert _whole(path, "s").steps.tolist() == list(range(13))


def test_captures_older_than_flush_seconds_go_without_flush(tmp_path):
    path = tmp_path / "r.nc"
    with simkit.record(path, {"s": {"every": 1, "diagnostics": ["loss"]}},
                       flush_seconds=1e-9) as rec:
        for i in range(5):
            rec.step(i, loss=float(i))
        # Handed over at each step: the writer thread puts them on disk with no flush() asked.
        deadline = time.monotonic() + 30
        while len(_whole(path, "s").steps) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _whole(path, "s").steps.tolist() == list(range(5))


def test_blocks_over_the_block_size_keep_every_value_in_order(tmp_path):
    path = tmp_path / "r.nc"
    u = np.zeros((3, 2), dtype=np.float32)
    with simkit.record(path, {"s": {"every": 1, "diagnostics": ["loss"]},
                              "f": {"every": 9, "fields": ["u"], "last": True}}) as rec:
        for i in range(2500):
            u += 1  # in place: a capture is a copy taken at its step
            rec.step(i, loss=1.0 / (i + 1), u=u)
    s, f = _whole(path, "s"), _whole(path, "f")
    assert s.steps.tolist() == list(range(2500))
    np.testing.assert_array_equal(s.arrays["loss"], 1.0 / (np.arange(2500) + 1))
    assert f.steps.tolist() == [*range(0, 2500, 9), 2499]
    np.testing.assert_array_equal(f.arrays["u"][:, 0, 0], np.array(f.steps) + 1.0)
    assert f.arrays["u"].dtype == np.float32


def test_steps_records_rows_as_step_would(tmp_path):
    outputs = {"s": {"every": 2, "fields": ["u"], "diagnostics": ["loss"]}}
    u = np.arange(12.0).reshape(6, 2)
    with simkit.record(tmp_path / "a.nc", outputs) as rec:
        rec.steps(range(6), times=[0.5 * i for i in range(6)], u=u, loss=u[:, 0])
    with simkit.record(tmp_path / "b.nc", outputs) as rec:
        for i in range(6):
            rec.step(i, time=0.5 * i, u=u[i], loss=u[i, 0])
    a, b = _whole(tmp_path / "a.nc", "s"), _whole(tmp_path / "b.nc", "s")
    assert a.steps.tolist() == b.steps.tolist() == [0, 2, 4]
    assert a.times.tolist() == b.times.tolist() == [0.0, 1.0, 2.0]
    for name in ("u", "loss"):
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])


class _Writer:
    """A capture writer that notes what it is handed."""

    def __init__(self):
        self.calls = []

    def capture_blocks(self, blocks):
        self.calls.append(("blocks", blocks))

    def committed(self, step):
        self.calls.append(("committed", step))


def test_commit_captures_hands_one_block_per_stream_in_one_write():
    writer = _Writer()
    one, two = np.array(1.0), np.array(2.0)
    commit_captures(writer, [("a", 0, 0.0, {"x": one, "y": one}), ("b", 0, 0.0, {"z": two}),
                             ("a", 3, 1.5, {"x": two, "y": one})],
                    {"a": ("x",), "b": ("z",)}, upto=4)
    assert [kind for kind, _ in writer.calls] == ["blocks", "committed"]
    blocks = writer.calls[0][1]
    assert [(name, steps, times) for name, steps, times, _ in blocks] == [
        ("a", [0, 3], [0.0, 1.5]), ("b", [0], [0.0])]
    assert list(blocks[0][3]) == ["x"]  # only the variables the stream keeps
    np.testing.assert_array_equal(blocks[0][3]["x"], [1.0, 2.0])
    np.testing.assert_array_equal(blocks[1][3]["z"], [2.0])
    assert writer.calls[1] == ("committed", 4)


def test_a_loop_that_fails_keeps_the_captures_still_held(tmp_path):
    path = tmp_path / "r.nc"
    with pytest.raises(RuntimeError, match="diverged"), \
            simkit.record(path, {"s": {"every": 1, "diagnostics": ["loss"]}},
                          flush_seconds=3600) as rec:
        for i in range(7):
            rec.step(i, loss=float(i))
        raise RuntimeError("diverged")
    assert _whole(path, "s").steps.tolist() == list(range(7))
