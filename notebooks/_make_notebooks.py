"""Writes the notebooks of this folder from the cells below (committed without outputs).

    python notebooks/_make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", "# Quick start\nRun a scenario from Python, open its file with xarray, plot "
               "captures over time."),
        ("code", "import tempfile\nfrom pathlib import Path\n\nimport matplotlib\n"
                 "matplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport xarray as xr\n\n"
                 "import simkit\n\nwork = Path(tempfile.mkdtemp())"),
        ("code", "result = simkit.run('../scenarios/heat2d.yaml', steps=400,\n"
                 "                    params={'shape': [96, 96]}, output=str(work / 'heat.nc'))\n"
                 "result.path, result.step, result.state['u'].shape"),
        ("code", "tree = xr.open_datatree(result.path)\ntree"),
        ("code", "snaps = tree['snapshots'].to_dataset()\n"
                 "snaps.u.isel(step=[0, 1, 2, -1]).plot(col='step', col_wrap=4, cmap='viridis')\n"
                 "plt.savefig(work / 'snapshots.png')"),
        ("code", "diag = tree['diagnostics'].to_dataset()\n"
                 "fig, ax = plt.subplots()\ndiag.max_abs.plot(x='time', ax=ax)\n"
                 "# the heat content is conserved on a periodic plate:\n"
                 "abs(diag.heat / diag.heat[0] - 1).max().item()"),
    ],
    "02_intermediates.ipynb": [
        ("md", "# Captured intermediates\nA stage-level capture (the Laplacian probe of heat2d, "
               "taken between its two stages) and a conditional capture (`when`), evaluated on "
               "the device inside the compiled loop."),
        ("code", "import tempfile\nfrom pathlib import Path\n\n"
                 "import xarray as xr\n\nimport simkit\n\nwork = Path(tempfile.mkdtemp())"),
        ("code", "result = simkit.run({\n"
                 "    'solver': 'heat2d', 'backend': 'jax',\n"
                 "    'params': {'shape': [64, 64]}, 'initial': {'kind': 'gaussian', 'width': 4.0},\n"
                 "    'steps': 300,\n"
                 "    'outputs': {\n"
                 "        'states': {'every': 50, 'fields': ['u']},\n"
                 "        'mid_step': {'every': 50, 'stage': 'laplacian', "
                 "'fields': ['laplacian']},\n"
                 "        'cooled': {'when': {'diagnostic': 'max_abs', 'below': 0.2}, "
                 "'fields': ['u'], 'diagnostics': ['max_abs']},\n"
                 "    },\n"
                 "    'output': str(work / 'intermediates.nc')})"),
        ("code", "tree = xr.open_datatree(result.path)\n"
                 "for name in tree.children:\n"
                 "    ds = tree[name].to_dataset()\n"
                 "    print(name, list(ds.data_vars), ds.step.values)"),
        ("code", "cooled = tree['cooled'].to_dataset()\n"
                 "print('first step with max |u| < 0.2:', int(cooled.step[0]), "
                 "float(cooled.max_abs[0]))\n"
                 "mid = tree['mid_step'].to_dataset()\nmid.laplacian.sel(step=50).plot()"),
    ],
    "03_validation.ipynb": [
        ("md", "# Convergence and validation\nMeasured orders of convergence and agreement with "
               "analytic and published references."),
        ("code", "import math\nimport tempfile\nfrom pathlib import Path\n\nimport matplotlib\n"
                 "matplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport numpy as np\n\n"
                 "import simkit\n\nwork = Path(tempfile.mkdtemp())"),
        ("code", "def heat_error(n):\n"
                 "    h = 1.0 / n\n"
                 "    r = simkit.run({'solver': 'heat2d', 'params': {'shape': [n, n], 'spacing': h},\n"
                 "                    'initial': {'kind': 'mode', 'mode': [1, 1]}, 'until': 0.01,\n"
                 "                    'dt': 0.2 * h * h, 'output': str(work / f'h{n}.nc')})\n"
                 "    x = np.arange(n) * h\n"
                 "    exact = np.outer(np.sin(2*np.pi*x), np.sin(2*np.pi*x)) * "
                 "math.exp(-8*np.pi**2*0.01)\n"
                 "    return np.abs(r.state['u'] - exact).max()\n\n"
                 "sizes = np.array([12, 24, 48])\nerrors = [heat_error(n) for n in sizes]\n"
                 "order = np.polyfit(np.log(1/sizes), np.log(errors), 1)[0]\n"
                 "fig, ax = plt.subplots()\nax.loglog(1/sizes, errors, 'o-')\n"
                 "ax.set(xlabel='h', ylabel='max error')\n"
                 "print(f'heat2d spatial order {order:.2f}')"),
        ("code", "def lorenz(dt):\n"
                 "    r = simkit.run({'solver': 'lorenz63', 'steps': round(0.5/dt), 'dt': dt,\n"
                 "                    'output': str(work / f'l{dt}.nc')})\n"
                 "    return np.array([r.state[c][0] for c in 'xyz'])\n\n"
                 "ref = lorenz(1e-4)\ndts = np.array([0.01, 0.005, 0.0025])\n"
                 "errs = [np.abs(lorenz(dt) - ref).max() for dt in dts]\n"
                 "print(f'Lorenz RK4 order {np.polyfit(np.log(dts), np.log(errs), 1)[0]:.2f}')"),
        ("code", "import xarray as xr\n\nfrom solvers.ising2d import onsager_energy\n\n"
                 "r = simkit.run({'solver': 'ising2d', 'params': {'temperature': 3.0, "
                 "'shape': [32, 32]},\n"
                 "                'steps': 600, 'outputs': {'e': {'every': 2, "
                 "'diagnostics': ['energy']}},\n"
                 "                'output': str(work / 'ising.nc')})\n"
                 "e = xr.open_dataset(r.path, group='e').energy.sel(step=slice(200, None)).mean()\n"
                 "print(f'Ising T=3: {float(e):.4f} vs Onsager {onsager_energy(3.0):.4f}')"),
    ],
    "04_sweep.ipynb": [
        ("md", "# A Gray-Scott sweep on Dask\nFeed rates across pattern classes, run as "
               "members on a local Dask cluster and combined along `member`."),
        ("code", "import tempfile\nfrom pathlib import Path\n\nimport xarray as xr\nimport yaml\n\n"
                 "from simkit.sweep import run_sweep\n\nwork = Path(tempfile.mkdtemp())"),
        ("code", "sweep = {\n"
                 "    'scenario': '../scenarios/gray_scott_mitosis.yaml',\n"
                 "    'parameters': {'params.feed': [0.030, 0.0367, 0.045]},\n"
                 "    'set': {'steps': 1500, 'params.shape': [48, 48], 'params.length': 0.46875,\n"
                 "            'outputs': {'stats': {'every': 500, 'diagnostics': "
                 "['covered', 'v_std']}}},\n"
                 "    'output': str(work / 'sweep'),\n}\n"
                 "(work / 'sweep.yaml').write_text(yaml.safe_dump(sweep))\n"
                 "result = run_sweep(work / 'sweep.yaml', workers=2)\n"
                 "result.failed, result.combined"),
        ("code", "tree = xr.open_datatree(result.combined)\nstats = tree['stats'].to_dataset()\n"
                 "print(stats)\nstats.covered.sel(step=1500).to_series()"),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
