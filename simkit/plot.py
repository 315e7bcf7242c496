"""Pictures of a run file: a field at captured steps as panels or an animation, a diagnostic as a
line over time. Built on xarray's and matplotlib's plotting."""

from __future__ import annotations

import numbers
import os
import shutil
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


def plot(path: str | os.PathLike, field: str, *, stream: str | None = None,
         output: str | os.PathLike | None = None, panels: int = MAX_PANELS) -> Path:
    """Draw ``field`` from a run file; returns the image or animation written.

    A diagnostic (one value per capture) becomes a line over simulated time; a 2D field becomes a
    grid of up to ``panels`` panels at evenly spread captured steps, or an animation of every
    captured step when ``output`` ends in .gif or .mp4.

    Raises:
        ScenarioError: no such stream or field, no captures, a bad output name or panel count.
    """
    if isinstance(panels, bool) or not isinstance(panels, numbers.Integral) or \
            not 1 <= panels <= PANELS_LIMIT:
        raise ScenarioError(f"expected a whole number of panels from 1 to {PANELS_LIMIT}, given "
                            f"{panels!r}", key="--panels")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    from simkit.io import xarray_lock

    source = str(path)
    output = Path(output) if output else Path(path).with_name(f"{Path(path).stem}_{field}.png")
    if output.suffix not in _FORMATS:
        raise ScenarioError(f"expected an output ending in {', '.join(_FORMATS)}, given "
                            f"{str(output)!r}", key="-o")
    if output.suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise ScenarioError("expected ffmpeg on PATH to write .mp4, given none; use .gif",
                            key="-o")
    with xarray_lock(), xr.open_datatree(path) as tree:  # runs may write in other threads
        name, da = _find(tree, field, stream, source)
        da = da.load()
    if da.sizes.get("step", 0) == 0:
        raise ScenarioError(f"expected captures in stream {name!r}, given none", source=source)
    title = f"{Path(path).name}: {name}/{field}"
    if da.ndim == 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        da.plot(x="time", ax=ax, marker="." if da.sizes["step"] < 50 else None)
        ax.set_title(title)
    elif output.suffix in (".gif", ".mp4"):
        return _animate(da, output, title)
    else:
        frames = da.isel(step=np.unique(np.linspace(0, da.sizes["step"] - 1, panels).round()
                                        .astype(int)))
        if frames.ndim == 2:  # one spatial dimension: steps along the x axis
            fig, ax = plt.subplots(figsize=(8, 4))
            da.plot(x="step", ax=ax, **_colormap(da.values))
            ax.set_title(title)
        else:
            extra = [d for d in frames.dims if d not in ("step",)][:-2]
            frames = frames.isel({d: 0 for d in extra})
            grid = frames.plot(col="step", col_wrap=min(3, frames.sizes["step"]),
                               **_colormap(frames.values))
            grid.fig.suptitle(title, y=1.02)
            fig = grid.fig
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return output


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
