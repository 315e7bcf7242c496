"""Pictures of a run file: a field at captured steps as panels or an animation, a diagnostic as a
line over time, a histogram over time as a step x bin image, a field's summaries as lines with
bands. Built on xarray's and matplotlib's plotting."""

from __future__ import annotations

import numbers
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from simkit.errors import ScenarioError

MAX_PANELS = 9
#: More panels than this make a figure too large to be of use (and to hold in memory).
PANELS_LIMIT = 100
_FORMATS = (".png", ".pdf", ".svg", ".gif", ".mp4")


def _find(tree, field: str, stream: str | None, source: str):
    names = [stream] if stream else [name for name in tree.children]
    for name in names:
        if name not in tree.children:
            raise ScenarioError(f"expected one of the file's streams "
                                f"({', '.join(tree.children)}), given {name!r}",
                                source=source, key="--stream")
        ds = tree[name].to_dataset()
        if field in ds.data_vars:
            return name, ds[field]
    found = sorted({v for child in tree.children for v in tree[child].to_dataset().data_vars}
                   - {"simkit_crc32"})
    raise ScenarioError(f"expected a captured field or diagnostic ({', '.join(found)}), "
                        f"given {field!r}", source=source, key="--field")


def _colormap(data) -> dict:
    low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if low < 0 < high:
        bound = max(-low, high)
        return {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    return {"cmap": "viridis", "vmin": low, "vmax": high}


def _find_summaries(tree, field: str, stream: str | None):
    """The first stream (or ``stream``) holding summaries of ``field``, as (name, dataset)."""
    names = [stream] if stream else list(tree.children)
    for name in names:
        if name not in tree.children:
            continue
        ds = tree[name].to_dataset()
        if any(f"{field}_{kind}" in ds.data_vars for kind in _SUMMARY_LINES):
            return name, ds
    return None


_SUMMARY_LINES = ("mean", "min", "max", "std", "quantiles")
#: Colour scales of a histogram image; ``auto`` is logarithmic when the counts span more than
#: ``_LOG_SPAN`` times the median of those above zero (a bin holding most values, say zeros):
#: on a linear scale half of the drawn cells would then share the bottom tenth of the colours.
COLOR_SCALES = ("auto", "linear", "log")
_LOG_SPAN = 10


def plot(path: str | os.PathLike, field: str, *, stream: str | None = None,
         output: str | os.PathLike | None = None, panels: int = MAX_PANELS,
         summary: bool = False, color_scale: str = "auto") -> Path:
    """Draw ``field`` from a run file; returns the image or animation written.

    A diagnostic (one value per capture) becomes a line over simulated time; a 2D field becomes a
    grid of up to ``panels`` panels at evenly spread captured steps, or an animation of every
    captured step when ``output`` ends in .gif or .mp4. A histogram summary (``u_histogram``)
    becomes an image of its counts over time (captures along x, bins along y), its colours
    ``color_scale`` (``auto``: logarithmic when one bin holds far more than the others, ``linear``
    or ``log``); with ``summary`` (or when ``field`` itself was not captured), the summaries of
    ``field`` become lines over time with bands: min to max, and each pair of quantiles ``q``,
    ``1 - q``, around the mean and median (mean ± std drawn within min..max where they are kept).

    Raises:
        ScenarioError: no such stream or field, no captures, a bad output name or panel count.
    """
    _check_options(panels, color_scale)
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")  # images to files; a backend already chosen (a notebook's) stays

    source = str(path)
    output = _output_path(path, field, output)
    summaries, name, ds, da = _read(path, field, stream, summary)
    title = f"{Path(path).name}: {name}/{field}"
    if summaries:
        if ds.sizes.get("step", 0) == 0:
            raise ScenarioError(f"expected captures in stream {name!r}, given none",
                                source=source)
        return _save(_summary_lines(ds, field, title), output)
    if ds is not None and da.sizes.get("step", 0):
        return _save(_histogram_image(ds, da, title, color_scale), output)
    if da.sizes.get("step", 0) == 0:
        raise ScenarioError(f"expected captures in stream {name!r}, given none", source=source)
    if da.size == 0:  # a recorded value of zero elements
        shape = ", ".join(f"{d}: {n}" for d, n in da.sizes.items())
        raise ScenarioError(f"expected a field or diagnostic with values to draw, given "
                            f"{field!r} of shape ({shape}), which holds none", source=source,
                            key="--field")
    if da.ndim != 1 and output.suffix in (".gif", ".mp4"):
        return _animate(da, output, title)
    return _save(_field_figure(da, title, panels), output)


def _check_options(panels: int, color_scale: str) -> None:
    if isinstance(panels, bool) or not isinstance(panels, numbers.Integral) or \
            not 1 <= panels <= PANELS_LIMIT:
        raise ScenarioError(f"expected a whole number of panels from 1 to {PANELS_LIMIT}, given "
                            f"{panels!r}", key="--panels")
    if color_scale not in COLOR_SCALES:
        raise ScenarioError(f"expected a colour scale {', '.join(COLOR_SCALES)}, given "
                            f"{color_scale!r}", key="--color-scale")


def _output_path(path: str | os.PathLike, field: str, output: str | os.PathLike | None) -> Path:
    """The image or animation to write (by default beside the run file), refused unless its
    format can be written here."""
    output = Path(output) if output else Path(path).with_name(f"{Path(path).stem}_{field}.png")
    if output.suffix not in _FORMATS:
        raise ScenarioError(f"expected an output ending in {', '.join(_FORMATS)}, given "
                            f"{str(output)!r}", key="-o")
    if output.suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise ScenarioError("expected ffmpeg on PATH to write .mp4, given none; use .gif",
                            key="-o")
    return output


def _read(path: str | os.PathLike, field: str, stream: str | None, summary: bool):
    """What to draw, loaded: ``(True, stream, its dataset, None)`` for summaries of ``field``,
    else ``(False, stream, its dataset or None, the field)`` (the dataset for a histogram)."""
    from simkit.io import open_run_tree

    source = str(path)
    with open_run_tree(path) as tree:  # under the xarray lock; a bad file said in one line
        found = _find_summaries(tree, field, stream)
        held = any(field in tree[c].to_dataset().data_vars for c in tree.children)
        if found is not None and (summary or not held):
            name, ds = found
            return True, name, ds.load(), None
        if summary:
            raise ScenarioError(f"expected a field with summaries, given {field!r}",
                                source=source, key="--field")
        name, da = _find(tree, field, stream, source)
        ds = tree[name].to_dataset().load() if _is_histogram(da) else None
        return False, name, ds, da.load()


def _field_figure(da, title: str, panels: int):
    """A diagnostic as a line over time; a field as a grid of panels at evenly spread steps
    (steps along x for a field of one spatial dimension)."""
    import matplotlib.pyplot as plt

    if da.ndim == 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        da.plot(x="time", ax=ax, marker="." if da.sizes["step"] < 50 else None)
        ax.set_title(title)
        return fig
    frames = da.isel(step=np.unique(np.linspace(0, da.sizes["step"] - 1, panels).round()
                                    .astype(int)))
    if frames.ndim == 2:  # one spatial dimension: steps along the x axis
        fig, ax = plt.subplots(figsize=(8, 4))
        da.plot(x="step", ax=ax, **_colormap(da.values))
        ax.set_title(title)
        return fig
    extra = [d for d in frames.dims if d not in ("step",)][:-2]
    frames = frames.isel({d: 0 for d in extra})
    grid = frames.plot(col="step", col_wrap=min(3, frames.sizes["step"]),
                       **_colormap(frames.values))
    grid.fig.suptitle(title, y=1.02)
    return grid.fig


def _is_histogram(da) -> bool:
    return da.ndim == 2 and da.name.endswith("_histogram") and da.dims[1].endswith("_bin")


def _save(fig, output: Path) -> Path:
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return output


def _histogram_image(ds, da, title: str, color_scale: str = "auto"):
    """Counts as an image: one column per capture, one row per bin, bins at their edges; on a
    logarithmic colour scale (empty bins left white) for ``log``, and for ``auto``
    when the counts span more than ``_LOG_SPAN`` times their median above zero."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    edges_name = f"{da.dims[1]}_edge"
    centres = ds[da.dims[1]].values
    edges = ds[edges_name].values if edges_name in ds.coords else np.concatenate(
        [centres[:1] - 0.5, (centres[1:] + centres[:-1]) / 2, centres[-1:] + 0.5])
    steps = ds.step.values.astype(float)
    x = np.concatenate([steps, steps[-1:] + (np.diff(steps[-2:]) if len(steps) > 1 else [1.0])])
    counts = np.asarray(da.values, dtype=np.float64).T
    positive = counts[counts > 0]
    log = positive.size > 0 and (color_scale == "log" or (
        color_scale == "auto" and positive.max() > _LOG_SPAN * np.median(positive)))
    style = {"cmap": "viridis"}
    if log:
        # Empty bins: masked on a log scale, drawn blank.
        cmap = plt.get_cmap("viridis").with_extremes(bad="white")
        counts = np.ma.masked_less_equal(counts, 0)
        style = {"cmap": cmap, "norm": LogNorm(vmin=positive.min(), vmax=positive.max())}
    fig, ax = plt.subplots(figsize=(8, 4))
    mesh = ax.pcolormesh(x, edges, counts, shading="flat", **style)
    scale = ", log scale, empty bins white" if log else ""
    fig.colorbar(mesh, ax=ax, label=f"count per bin ({da.attrs.get('units', '1')}{scale})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{da.dims[1].removesuffix('_bin')} "
                  f"[{ds[da.dims[1]].attrs.get('units', '')}]")
    ax.set_title(title)
    return fig


def _summary_lines(ds, field: str, title: str):
    """Mean and median as lines; min..max and quantile pairs as bands, over time."""
    import matplotlib.pyplot as plt

    time = ds.time.values
    fig, ax = plt.subplots(figsize=(8, 4))
    low, high = ds.get(f"{field}_min"), ds.get(f"{field}_max")
    if low is not None and high is not None:
        ax.fill_between(time, low.values, high.values, alpha=0.15, color="C0", label="min..max")
    quantiles = ds.get(f"{field}_quantiles")
    if quantiles is not None:
        qs = list(ds[quantiles.dims[1]].values)
        for i, q in enumerate(qs):
            pair = [j for j, p in enumerate(qs) if np.isclose(p, 1 - q)]
            if q < 0.5 and pair:
                ax.fill_between(time, quantiles.values[:, i], quantiles.values[:, pair[0]],
                                alpha=0.25, color="C0", label=f"q{q:g}..q{1 - q:g}")
            elif np.isclose(q, 0.5):
                ax.plot(time, quantiles.values[:, i], color="C1", label="median")
            elif not pair:
                ax.plot(time, quantiles.values[:, i], lw=0.8, ls=":", label=f"q{q:g}")
    mean = ds.get(f"{field}_mean")
    if mean is not None:
        ax.plot(time, mean.values, color="C0", label="mean")
        std = ds.get(f"{field}_std")
        if std is not None:
            upper, lower = mean.values + std.values, mean.values - std.values
            label = "mean ± std"
            if low is not None and high is not None:  # never outside the values (a field >= 0)
                upper = np.clip(upper, low.values, high.values)
                lower = np.clip(lower, low.values, high.values)
                label = "mean ± std within min..max"
            ax.plot(time, upper, color="C0", lw=0.8, ls="--", label=label)
            ax.plot(time, lower, color="C0", lw=0.8, ls="--")
    units = next((ds[v].attrs.get("units") for v in ds.data_vars
                  if v.startswith(f"{field}_") and ds[v].attrs.get("units")), "")
    ax.set_xlabel(f"time [{ds.time.attrs.get('units', '')}]")
    ax.set_ylabel(f"{field} [{units}]")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def _animate(da, output: Path, title: str) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib import animation

    extra = [d for d in da.dims if d != "step"][:-2]
    da = da.isel({d: 0 for d in extra})
    fig, ax = plt.subplots(figsize=(5, 5))
    style = _colormap(da.values)
    image = da.isel(step=0).plot(ax=ax, **style)

    def frame(i):
        image.set_array(da.isel(step=i).values.ravel())
        ax.set_title(f"{title}, step {int(da.step[i])}, time {float(da.time[i]):.4g}")
        return (image,)

    anim = animation.FuncAnimation(fig, frame, frames=da.sizes["step"], blit=False)
    writer = animation.PillowWriter(fps=8) if output.suffix == ".gif" else \
        animation.FFMpegWriter(fps=8)
    output.parent.mkdir(parents=True, exist_ok=True)
    anim.save(output, writer=writer)
    plt.close(fig)
    return output
