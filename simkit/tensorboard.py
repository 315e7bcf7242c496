"""A run file as TensorBoard event files: scalars, histograms and images of 2-D fields, for users
who know the view from training loops. Needs the optional ``tensorboardX``."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
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
    of a larger one) an image scaled over the field's finite range in the whole stream. Steps
    are the file's steps. Arrays with no elements draw nothing; non-finite values are left out of
    histograms and drawn as the low end in images (NaN scalars stay NaN).

    The event file's name ends in a tag of the run file's absolute path: an earlier export of the
    same file into ``logdir`` is replaced (TensorBoard would show every event twice), exports of
    other files are kept. The events are written in a temporary directory beside ``logdir`` and
    moved in when whole; such directories of processes that died are removed first.

    Returns:
        ``logdir``.

    Raises:
        ScenarioError: not a run file or one that cannot be read, ``logdir`` not a directory,
            or tensorboardX not installed.
    """
    from simkit.io._temporaries import remove_stale_temporaries, temporary_path
    from simkit.io.recover import open_run_tree

    writer_class = _writer_class()
    given = Path(logdir)
    logdir = _event_directory(given)
    with open_run_tree(path) as tree:
        streams = {name: tree[name].to_dataset().load() for name in tree.children}
    suffix = _source_suffix(path)
    remove_stale_temporaries(logdir)
    tmp = temporary_path(logdir)
    try:
        tmp.mkdir()
        writer = writer_class(logdir=str(tmp), filename_suffix=suffix)
        try:
            for name, ds in streams.items():
                if ds.sizes.get("step", 0) == 0:
                    continue
                steps = [int(s) for s in ds.step.values]
                for var in ds.data_vars:
                    _write_variable(writer, name, ds, str(var), steps, max_images)
        finally:
            writer.close()
        earlier = [p for p in logdir.iterdir()
                   if p.name.startswith(_EVENTS) and p.name.endswith(suffix)]
        written = sorted(p.name for p in tmp.iterdir())
        for name in written:
            os.replace(tmp / name, logdir / name)
        for old in earlier:
            if old.name not in written:
                old.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return given


#: How the names of TensorBoard event files begin.
_EVENTS = "events.out.tfevents."


def _source_suffix(path: str | os.PathLike) -> str:
    """The end of the event file names written from the run file at ``path``."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:16]
    return f".simkit-{digest}"


def _event_directory(logdir: Path) -> Path:
    """``logdir`` made if missing, absolute; anything there but a directory is refused."""
    if logdir.exists() or logdir.is_symlink():
        if not logdir.is_dir():
            kind = _kind(logdir)
            raise ScenarioError(f"expected a directory for the event files, given {kind}",
                                source=str(logdir), key="logdir")
    else:
        try:
            logdir.mkdir(parents=True)
        except OSError as error:
            raise ScenarioError(f"expected a directory that can be made, given a path where "
                                f"making it fails ({error.strerror or error})",
                                source=str(logdir), key="logdir") from None
    return logdir.resolve()


def _kind(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "a link to nothing" if not path.exists() else "a link to something else"
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "something else"


def _write_variable(writer, stream: str, ds, var: str, steps: list[int], max_images: int
                    ) -> None:
    da = ds[var]
    tag = f"{stream}/{var}"
    if da.dims == ("step",):
        for step, value in zip(steps, da.values, strict=True):
            writer.add_scalar(tag, float(value), global_step=step)
        return
    extra = da.dims[1:]
    if da.size == 0:  # no elements: nothing to draw
        return
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
        finite = frames[np.isfinite(frames)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scale = (high - low) or 1.0
        chosen = np.unique(np.linspace(0, len(steps) - 1, min(max_images, len(steps)))
                           .round().astype(int))
        for i in chosen:
            image = np.clip(np.nan_to_num((frames[i] - low) / scale, nan=0.0, posinf=1.0,
                                          neginf=0.0), 0.0, 1.0)
            writer.add_image(tag, (image * 255).round().astype(np.uint8)[None], steps[i],
                             dataformats="CHW")
        return
    if len(extra) == 1 and da.dtype.kind in "fiu":
        for step, values in zip(steps, da.values, strict=True):
            values = np.asarray(values, dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size:  # TensorBoard has no histogram of nothing
                writer.add_histogram(tag, values, global_step=step)
