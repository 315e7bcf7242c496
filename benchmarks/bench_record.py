"""``simkit.record`` in a plain Python loop: the cost per step of recording one scalar every step,
against ``tensorboardX.SummaryWriter.add_scalar`` doing the same in the same process run."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from cases import Skip, _target, interleaved

import simkit
from simkit.io import open_reader


def record_scalar_every_step(quick: bool = False) -> dict:
    """simkit.record: one scalar every step of a Python loop, against tensorboardX add_scalar."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:  # the reference is an optional extra
        raise Skip(f"tensorboardX not installed ({error})") from error
    steps = 2_000 if quick else 10_000
    folder = tempfile.mkdtemp()
    runs = {"n": 0}

    def bare() -> None:
        loss = 0.0
        for i in range(steps):
            loss = 1.0 / (i + 1)
        assert loss > 0

    def record() -> None:
        runs["n"] += 1
        path = os.path.join(folder, f"r{runs['n']}.nc")
        with simkit.record(path, {"train": {"every": 1, "diagnostics": ["loss"]}}) as rec:
            for i in range(steps):
                rec.step(i, loss=1.0 / (i + 1))

    def tensorboard() -> None:
        runs["n"] += 1
        writer = SummaryWriter(os.path.join(folder, f"tb{runs['n']}"))
        for i in range(steps):
            writer.add_scalar("loss", 1.0 / (i + 1), i)
        writer.close()

    medians = interleaved({"bare": bare, "record": record, "tensorboardX": tensorboard},
                          repeats=3 if quick else 5)
    path = os.path.join(folder, f"r{runs['n'] - 1}.nc")
    with open_reader(path) as reader:  # the last recording holds every step's value
        kept = reader.captures("train")
    assert kept.steps.tolist() == list(range(steps))
    np.testing.assert_array_equal(kept.arrays["loss"], 1.0 / (np.arange(steps) + 1))
    per_step = {name: (seconds - medians["bare"]) / steps for name, seconds in medians.items()}
    outcome = {"steps": steps,
               "simkit.record us/step": per_step["record"] * 1e6,
               "tensorboardX add_scalar us/step": per_step["tensorboardX"] * 1e6,
               "record / tensorboardX": per_step["record"] / per_step["tensorboardX"]}
    _target(outcome, "record us/step", per_step["record"] * 1e6, 20.0)
    _target(outcome, "record / tensorboardX", outcome["record / tensorboardX"], 1.0)
    return outcome


BENCHMARKS = [record_scalar_every_step]
