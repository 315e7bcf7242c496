"""A run file as TensorBoard event files: scalars, histograms and images of 2-D fields, for users
who know the view from training loops. Needs the optional ``tensorboardX``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simkit.errors import ScenarioError

#: Images of a field drawn at most this many times per stream (evenly spread over its captures).
MAX_IMAGES = 100


def _writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ScenarioError("expected the optional package tensorboardX (pip install "
                            "'simkit[tensorboard]'), given none installed",
                            key="tensorboard") from None
    return SummaryWriter


def to_tensorboard(path: str | os.PathLike, logdir: str | os.PathLike,
                   max_images: int = MAX_IMAGES) -> Path:
    """Write the captures of a run file as TensorBoard events under ``logdir``.

    Each stream's per-capture scalars (diagnostics, summaries) become scalars tagged
    ``<stream>/<name>``, quantiles ``<stream>/<name>/q<p>``, a histogram summary a TensorBoard
    histogram with the file's bins and counts, and a captured 2-D field (or the first 2-D slice
    of a larger one) an image scaled over the field's range in the whole stream. Steps are the
    file's steps.

    Returns:
        ``logdir``.

    Raises:
        ScenarioError: not a run file, or tensorboardX not installed.
    """
    import xarray as xr

    from simkit.io import xarray_lock
    from simkit.io.recover import require_run_file

    require_run_file(path)
    writer_class = _writer_class()
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    with xarray_lock(), xr.open_datatree(path) as tree:
        streams = {name: tree[name].to_dataset().load() for name in tree.children}
    writer = writer_class(logdir=str(logdir))
    try:
        for name, ds in streams.items():
            if ds.sizes.get("step", 0) == 0:
                continue
            steps = [int(s) for s in ds.step.values]
            for var in ds.data_vars:
                _write_variable(writer, name, ds, str(var), steps, max_images)
    finally:
        writer.close()
    return logdir


def _write_variable(writer, stream: str, ds, var: str, steps: list[int], max_images: int
                    ) -> None:
    da = ds[var]
    tag = f"{stream}/{var}"
    if da.dims == ("step",):
        for step, value in zip(steps, da.values, strict=True):
            writer.add_scalar(tag, float(value), global_step=step)
        return
    extra = da.dims[1:]
    if var.endswith("_histogram") and len(extra) == 1 and f"{extra[0]}_edge" in ds.coords:
        edges = ds[f"{extra[0]}_edge"].values.astype(np.float64)
        centres = (edges[:-1] + edges[1:]) / 2
        for step, counts in zip(steps, da.values, strict=True):
            counts = np.asarray(counts, dtype=np.float64)
            writer.add_histogram_raw(
                tag, min=float(edges[0]), max=float(edges[-1]), num=float(counts.sum()),
                sum=float(counts @ centres), sum_squares=float(counts @ centres ** 2),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                global_step=step)
        return
    if var.endswith("_quantiles") and len(extra) == 1:
        for j, q in enumerate(ds[extra[0]].values):
            for step, value in zip(steps, da.values[:, j], strict=True):
                writer.add_scalar(f"{tag}/q{q:g}", float(value), global_step=step)
        return
    if len(extra) >= 2 and da.dtype.kind in "fiu":
        frames = da.isel({d: 0 for d in extra[:-2]}).values.astype(np.float64)
        low, high = float(np.nanmin(frames)), float(np.nanmax(frames))
        scale = (high - low) or 1.0
        chosen = np.unique(np.linspace(0, len(steps) - 1, min(max_images, len(steps)))
                           .round().astype(int))
        for i in chosen:
            image = np.nan_to_num((frames[i] - low) / scale)
            writer.add_image(tag, (image * 255).round().astype(np.uint8)[None], steps[i],
                             dataformats="CHW")
        return
    if len(extra) == 1:
        for step, values in zip(steps, da.values, strict=True):
            writer.add_histogram(tag, np.asarray(values, dtype=np.float64), global_step=step)
