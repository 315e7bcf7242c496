"""Writes the notebooks of this folder from the cells below and executes them, so that the
committed notebooks show their outputs and figures (inline PNG images) to a reader:

    python notebooks/_make_notebooks.py [--no-execute] [NAME ...]
"""

import argparse
from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", "# Quick start\nRun a scenario from Python, open its file with xarray, plot "
               "captures over time."),
        ("code", "import tempfile\nfrom pathlib import Path\n\n"
                 "import matplotlib.pyplot as plt\nimport xarray as xr\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
        ("code", "result = simkit.run('../scenarios/heat2d.yaml', steps=400,\n"
                 "                    params={'shape': [96, 96]}, output=str(work / 'heat.nc'))\n"
                 "result.path.name, result.step, result.state['u'].shape"),
        ("code", "tree = xr.open_datatree(result.path)\n"
                 "print('streams:', list(tree.children), '- status:', tree.attrs['simkit_status'])\n"
                 "tree['snapshots']"),
        ("code", "snaps = tree['snapshots'].to_dataset()\n"
                 "snaps.u.isel(step=[0, 1, 2, -1]).plot(col='step', col_wrap=4, cmap='viridis')\n"
                 "plt.show()"),
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
                 "import xarray as xr\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
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
                 "mid = tree['mid_step'].to_dataset()\nmid.laplacian.sel(step=50).plot();"),
    ],
    "03_validation.ipynb": [
        ("md", "# Convergence and validation\nMeasured orders of convergence and agreement with "
               "analytic and published references."),
        ("code", "import math\nimport tempfile\nfrom pathlib import Path\n\n"
                 "import matplotlib.pyplot as plt\nimport numpy as np\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
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
                 "from simkit.sweep import run_sweep\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
        ("code", "sweep = {\n"
                 "    'scenario': '../scenarios/gray_scott_mitosis.yaml',\n"
                 "    'parameters': {'params.feed': [0.030, 0.0367, 0.045]},\n"
                 "    'set': {'steps': 1500, 'params.shape': [48, 48], 'params.length': 0.46875,\n"
                 "            'outputs': {'stats': {'every': 500, 'diagnostics': "
                 "['covered', 'v_std']}}},\n"
                 "    'output': str(work / 'sweep'),\n}\n"
                 "(work / 'sweep.yaml').write_text(yaml.safe_dump(sweep))\n"
                 "result = run_sweep(work / 'sweep.yaml', workers=2)\n"
                 "result.failed, result.combined.name"),
        ("code", "tree = xr.open_datatree(result.combined)\nstats = tree['stats'].to_dataset()\n"
                 "print(stats)\nstats.covered.sel(step=1500).to_series()"),
    ],
    "05_inverse.ipynb": [
        ("md", "# Inverse problems\nRecover parameters from the captures of a reference run: "
               "a heat diffusivity, then a Gray-Scott (feed, kill) pair. `simkit.value_and_grad` "
               "differentiates the run (reverse mode, O(sqrt n) states held) and "
               "`simkit.misfit` compares its captures with the reference file's; SciPy's "
               "L-BFGS-B does the rest."),
        ("code", "import tempfile\nfrom pathlib import Path\n\nimport numpy as np\n"
                 "import xarray as xr\nfrom scipy.optimize import minimize\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
        ("md", "## A heat diffusivity\nThe reference run (the 'observations') has D = 0.7; the "
               "fit starts from 0.3. `dt` is fixed so that only D changes between runs."),
        ("code", "heat = {'solver': 'heat2d', 'params': {'diffusivity': 0.7, 'shape': [24, 24]},\n"
                 "        'initial': {'kind': 'gaussian', 'width': 3.0}, 'steps': 40, 'dt': 0.2,\n"
                 "        'outputs': {'obs': {'every': 10, 'fields': ['u']}},\n"
                 "        'output': str(work / 'heat_truth.nc')}\n"
                 "simkit.run(heat)\n"
                 "objective = simkit.misfit(work / 'heat_truth.nc', 'obs')\n\n"
                 "def heat_misfit(x):\n"
                 "    r = simkit.value_and_grad(heat, objective, ['diffusivity'], backend='torch',\n"
                 "                              params={'diffusivity': float(x[0])})\n"
                 "    return r.value, np.array([r.grad['diffusivity']])\n\n"
                 "fit = minimize(heat_misfit, x0=[0.3], jac=True, method='L-BFGS-B', "
                 "bounds=[(0.05, 1.2)])\n"
                 "assert abs(fit.x[0] - 0.7) < 1e-6, fit\nfit.x, fit.nfev"),
        ("md", "## Gray-Scott feed and kill\nBoth rates at once, scaled to order one for the "
               "optimizer; the misfit compares both fields every 50 steps."),
        ("code", "gs = {'solver': 'gray_scott',\n"
                 "      'params': {'feed': 0.035, 'kill': 0.06, 'shape': [24, 24], "
                 "'length': 0.234375},\n"
                 "      'initial': {'kind': 'square', 'size': 0.0732, 'noise': 0.0},\n"
                 "      'steps': 200, 'dt': 1.0,\n"
                 "      'outputs': {'obs': {'every': 50, 'fields': ['u', 'v']}},\n"
                 "      'output': str(work / 'gs_truth.nc')}\n"
                 "simkit.run(gs)\n"
                 "objective = simkit.misfit(work / 'gs_truth.nc', 'obs')\n"
                 "scale = np.array([0.035, 0.06])\n\n"
                 "def gs_misfit(x):\n"
                 "    feed, kill = x * scale\n"
                 "    r = simkit.value_and_grad(gs, objective, ['feed', 'kill'], backend='torch',\n"
                 "                              params={'feed': feed, 'kill': kill})\n"
                 "    return r.value, np.array([r.grad['feed'], r.grad['kill']]) * scale\n\n"
                 "fit = minimize(gs_misfit, x0=[0.8, 1.15], jac=True, method='L-BFGS-B',\n"
                 "               bounds=[(0.3, 2.0), (0.3, 2.0)])\n"
                 "found = fit.x * scale\n"
                 "assert np.allclose(found, [0.035, 0.06], rtol=1e-4), fit\nfound, fit.nfev"),
        ("md", "## Gradients in the file\nWith `output`, the run file gets the objective, its "
               "gradients (root group) and adjoint streams dL/du_k (here every 10 steps) beside "
               "the forward captures."),
        ("code", "r = simkit.value_and_grad(heat, objective := simkit.misfit(work / "
                 "'heat_truth.nc', 'obs'),\n"
                 "                          ['diffusivity', 'u'], backend='torch', "
                 "params={'diffusivity': 0.5},\n"
                 "                          gradients={'adjoint': {'every': 10, 'fields': "
                 "['u']}},\n"
                 "                          output=work / 'heat_guess.nc')\n"
                 "tree = xr.open_datatree(r.path)\n"
                 "print(tree.to_dataset().gradient_diffusivity)\n"
                 "tree['adjoint'].to_dataset().u"),
        ("md", "## The run as a JAX function\n`simkit.autodiff.run_function` gives the run as "
               "`(params, fields) -> (final, captures)` for `jax.grad`, `jit` and `vmap`."),
        ("code", "import jax\nimport jax.numpy as jnp\n\n"
                 "from simkit.autodiff import run_function\n\n"
                 "run = run_function(heat, backend='jax')\nf0 = run.initial_fields()\n\n"
                 "def energy(d):\n    final, _ = run({'diffusivity': d}, f0)\n"
                 "    return jnp.sum(final['u'] ** 2)\n\n"
                 "jax.jit(jax.vmap(jax.grad(energy)))(jnp.asarray([0.3, 0.5, 0.7]))"),
    ],
    "06_record.ipynb": [
        ("md", "# Recording any loop\n`simkit.record` gives a plain Python loop the schedules, "
               "host copies, checksums and crash-safe file of a run: here a NumPy loop and a "
               "torch training-style loop, with summaries and a histogram over time."),
        ("code", "import tempfile\nfrom pathlib import Path\n\n"
                 "import matplotlib.pyplot as plt\nimport numpy as np\nimport xarray as xr\n"
                 "from IPython.display import Image, display\nfrom matplotlib.colors import LogNorm\n\n"
                 "import simkit\nfrom simkit.plot import plot\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its kernel stops\n"
                 "work = Path(tmp.name)"),
        ("md", "## A plain NumPy loop\nA 1-D diffusion written by hand. `u` is updated in place: "
               "every capture is a copy taken when `step` is called. The `laplacian` stage is "
               "probed every 50 steps; `u`'s summaries are kept at every step."),
        ("code", "x = np.linspace(0, 1, 200)\nu = np.exp(-((x - 0.5) / 0.05) ** 2)\n"
                 "dt, nu = 1e-5, 1.0\n"
                 "outputs = {\n"
                 "    'snapshots': {'every': 100, 'fields': ['u'], 'last': True},\n"
                 "    'mid': {'every': 50, 'stage': 'laplacian', 'fields': ['lap']},\n"
                 "    'stats': {'every': 1, 'diagnostics': ['heat'], 'summaries': {'u': [\n"
                 "        'mean', 'min', 'max', {'quantiles': [0.1, 0.5, 0.9]},\n"
                 "        {'histogram': {'bins': 32, 'range': [0.0, 1.0]}}]}},\n"
                 "}\n"
                 "with simkit.record(work / 'diffusion.nc', outputs, coords={'x': (x, 'm', "
                 "'position')},\n"
                 "                   dims={'u': ('x',), 'lap': ('x',)}, units={'u': 'K'}, "
                 "time_units='s') as rec:\n"
                 "    rec.step(0, time=0.0, u=u, heat=u.sum())\n"
                 "    for i in range(1, 501):\n"
                 "        with rec.stage('laplacian'):\n"
                 "            lap = (np.roll(u, 1) - 2 * u + np.roll(u, -1)) / (x[1] - x[0]) ** 2\n"
                 "            rec.probe('lap', lap)\n"
                 "        u += nu * dt * lap\n"
                 "        rec.step(i, time=i * dt, u=u, heat=u.sum())\n"
                 "print(rec.path.name)"),
        ("code", "tree = xr.open_datatree(work / 'diffusion.nc')\n"
                 "stats = tree['stats'].to_dataset()\n"
                 "print(list(stats.data_vars), stats.u_histogram.dims)\n"
                 "# counts on a log scale (empty bins blank): the few hot values show beside the many "
                 "cold ones\n"
                 "stats.u_histogram.T.plot(x='step', y='u_bin', cmap='viridis', norm=LogNorm(vmin=1))\n"
                 "plt.show()"),
        ("code", "# The pictures of the command line (simkit plot FILE --field u_histogram): "
                 "image files\n"
                 "display(Image(plot(work / 'diffusion.nc', 'u_histogram')),\n"
                 "        Image(plot(work / 'diffusion.nc', 'u', summary=True, "
                 "output=work / 'bands.png')))"),
        ("md", "## A torch training-style loop\nA linear model fitted by gradient descent. The "
               "loss is kept every step, the weights' histogram every 10 steps, and the first "
               "step at which the loss falls below 0.05 is captured (`when`). `rec.due(i)` lets "
               "the loop skip the gradient norm when nothing captures it."),
        ("code", "import torch\n\ntorch.manual_seed(0)\n"
                 "X = torch.randn(256, 16, dtype=torch.float64)\n"
                 "w_true = torch.linspace(-1, 1, 16, dtype=torch.float64)\n"
                 "y = X @ w_true + 0.1 * torch.randn(256, dtype=torch.float64)\n"
                 "w = torch.zeros(16, dtype=torch.float64, requires_grad=True)\n"
                 "opt = torch.optim.SGD([w], lr=0.05)\n"
                 "outputs = {\n"
                 "    'train': {'every': 1, 'diagnostics': ['loss']},\n"
                 "    'weights': {'every': 10, 'fields': ['w'], 'diagnostics': ['grad_norm'],\n"
                 "                'summaries': {'w': [{'histogram': {'bins': 20, "
                 "'range': [-1.5, 1.5]}}]}},\n"
                 "    'converged': {'when': {'diagnostic': 'loss', 'below': 0.05}, "
                 "'fields': ['w']},\n"
                 "}\n"
                 "with simkit.record(work / 'train.nc', outputs) as rec:\n"
                 "    for i in range(200):\n"
                 "        opt.zero_grad()\n"
                 "        loss = ((X @ w - y) ** 2).mean()\n"
                 "        loss.backward()\n"
                 "        grad_norm = w.grad.norm() if rec.due(i) else None\n"
                 "        rec.step(i, loss=loss, w=w, grad_norm=grad_norm)\n"
                 "        opt.step()"),
        ("code", "train = xr.open_datatree(work / 'train.nc')\n"
                 "print('converged at step', train['converged'].step.values)\n"
                 "weights = train['weights'].to_dataset()\n"
                 "fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3))\n"
                 "train['train'].to_dataset().loss.plot(ax=a, yscale='log')\n"
                 "weights.w_histogram.T.plot(ax=b, x='step', y='w_bin', cmap='viridis', norm=LogNorm(vmin=1))\n"
                 "plt.show()"),
    ],
    "07_live.ipynb": [
        ("md", "# Looking at a run while it goes on\nA run writes its file in the background (here "
               "a second process, as a batch job would); the notebook opens the file as often as "
               "it likes with `simkit.open`, which returns every capture committed so far and "
               "never a half-written one. Then the same from inside the process with "
               "`simkit.iterate`, stopping the run as soon as the pattern is there.\n\n"
               "Both runs are Pearson's worms (F = 0.050, k = 0.065) on a 64 x 64 grid of the "
               "same spacing as the scenario's 256 x 256 (a box of 0.625), so that its seeded "
               "square is 20 cells wide: the worms grow out of it within a few thousand steps, "
               "long before the 200,000 steps asked for."),
        ("code", "import subprocess, sys, tempfile, time\nfrom pathlib import Path\n\n"
                 "import matplotlib.pyplot as plt\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its "
                 "kernel stops\n"
                 "work = Path(tmp.name)\npath = work / 'gs.nc'\n"
                 "worms = Path('../scenarios/gray_scott_worms.yaml').resolve()"),
        ("code", "# The job runs in the folder of its file (`cwd`), as a batch job would.\n"
                 "job = subprocess.Popen([sys.executable, '-m', 'simkit', 'run', str(worms), "
                 "'-q',\n"
                 "                        '-o', path.name, '--set', 'params.shape=[64, 64]',\n"
                 "                        '--set', 'params.length=0.625',\n"
                 "                        '--set', 'steps=200000', '--set', 'flush_seconds=0.2',\n"
                 "                        '--set', 'outputs={pattern: {every: 500, fields: [v]}, '\n"
                 "                        'checkpoint: {every: 5000, fields: all}}'],\n"
                 "                       cwd=work)\n"
                 "while not path.exists() or simkit.open(path, 'pattern').sizes['step'] < 4:\n"
                 "    time.sleep(0.2)"),
        ("code", "# Re-open as often as you like: each call sees the captures committed so far.\n"
                 "for look in range(3):\n"
                 "    pattern = simkit.open(path, 'pattern')\n"
                 "    print('captured up to step', int(pattern.step[-1]))\n"
                 "    time.sleep(0.5)\n"
                 "pattern.v.isel(step=-1).plot(cmap='magma')\n"
                 "plt.show()"),
        ("code", "# Enough seen: ask the run to stop at its next block boundary (as `simkit stop`).\n"
                 "simkit.stop(path)\njob.wait(timeout=60)\n"
                 "print(simkit.open(path).attrs['simkit_status'])  # interrupted: resumable"),
        ("md", "In-process: captures as they are committed; leaving the loop stops the run. The "
               "pattern is there once the autocatalyst `v` (above 0.1) covers 30% of the box; "
               "the seed covers 10%."),
        ("code", "for capture in simkit.iterate(worms,\n"
                 "                              output=str(work / 'gs2.nc'), steps=200000,\n"
                 "                              params={'shape': [64, 64], 'length': 0.625},\n"
                 "                              flush_seconds=0.2,\n"
                 "                              outputs={'pattern': {'every': 500, 'fields': ['v'],\n"
                 "                                                   'diagnostics': ['covered']}},\n"
                 "                              streams=['pattern']):\n"
                 "    covered = float(capture.values['covered'])\n"
                 "    if covered > 0.3:\n"
                 "        print('pattern formed at step', capture.step, 'covering', "
                 "round(covered, 2), 'of the box')\n"
                 "        break\n"
                 "else:\n"
                 "    print('no pattern by the end of the run')"),
        ("code", "stopped = simkit.open(work / 'gs2.nc')\n"
                 "print(stopped.attrs['simkit_status'], 'at step', "
                 "int(stopped['pattern'].step[-1]))  # resumable\n"
                 "stopped['pattern'].v.isel(step=-1).plot(cmap='magma')\n"
                 "plt.show()"),
    ],
    "08_compiled_record.ipynb": [
        ("md", "# Recording inside compiled code\n`rec.step` also works inside your own "
               "`jax.jit`/`lax.scan` loop and inside a `torch.compile`d function. In JAX the "
               "device decides at which steps a stream may capture and only then calls the host "
               "(an ordered `io_callback`); `rec.scan`, a drop-in for `lax.scan`, also keeps "
               "per-step scalars in device buffers and hands them over a block at a time. The "
               "file is the one a plain Python loop would write."),
        ("code", "import tempfile\nfrom pathlib import Path\n\n"
                 "import jax\nimport jax.numpy as jnp\nimport matplotlib.pyplot as plt\n"
                 "import xarray as xr\n\nimport simkit\n\n"
                 "tmp = tempfile.TemporaryDirectory()  # this notebook's files, removed when its "
                 "kernel stops\n"
                 "work = Path(tmp.name)"),
        ("md", "## A jitted `lax.scan` simulation of your own\nA 2-D heat equation with a heater "
               "that pulses every 250 steps. Captured: the field at steps 2, 5 and 8, every 100 "
               "steps, and whenever the peak temperature rises above 2 (`when`); three scalars "
               "at every step."),
        ("code", "n, steps, dt = 64, 1000, 0.2\nx = jnp.linspace(-1, 1, n)\n"
                 "heater = jnp.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 0.02)\n\n"
                 "def advance(u, t):\n"
                 "    lap = jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1) + "
                 "jnp.roll(u, -1, 1) - 4 * u\n"
                 "    power = 0.1 * (1 + jnp.sin(2 * jnp.pi * t / 50))  # a pulse every 50 time "
                 "units\n"
                 "    return u + dt * lap + power * heater - 0.05 * u\n\n"
                 "outputs = {\n"
                 "    'early': {'at': [2, 5, 8], 'fields': ['u']},\n"
                 "    'snapshots': {'every': 100, 'fields': ['u']},\n"
                 "    'hot': {'when': {'diagnostic': 'peak', 'above': 2.0}, 'fields': ['u']},\n"
                 "    'scalars': {'every': 1, 'diagnostics': ['peak', 'energy', 'mean']},\n"
                 "}\n"
                 "with simkit.record(work / 'heat.nc', outputs, coords={'x': x, 'y': x},\n"
                 "                   dims={'u': ('x', 'y')}) as rec:\n"
                 "    def body(u, i):\n"
                 "        t = i.astype(jnp.float32) * dt  # simulated time\n"
                 "        u = advance(u, t)\n"
                 "        rec.step(i, time=t, u=u, peak=u.max(), energy=(u * u).sum(), "
                 "mean=u.mean())\n"
                 "        return u, None\n\n"
                 "    simulate = jax.jit(lambda u0: rec.scan(body, u0, jnp.arange(steps))[0])\n"
                 "    u = simulate(jnp.zeros((n, n)))\n"
                 "print(rec.path.name, 'final peak', float(u.max()))"),
        ("code", "tree = xr.open_datatree(work / 'heat.nc')\n"
                 "for name in ('early', 'snapshots', 'hot'):\n"
                 "    print(f'{name:10}', tree[name].step.values)\n"
                 "scalars = tree['scalars'].to_dataset()\n"
                 "hot = tree['hot'].to_dataset()\n"
                 "fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))\n"
                 "scalars.peak.plot(ax=a, x='time')\n"
                 "a.axhline(2.0, color='grey', ls='--')\n"
                 "a.plot(hot.time, scalars.peak.sel(step=hot.step), 'o', color='C3', "
                 "label='when: peak > 2')\n"
                 "a.legend()\n"
                 "hot.u.isel(step=0).plot(ax=b, cmap='inferno')\n"
                 "b.set_title(f'u at step {int(hot.step[0])}, the first rise above 2')\n"
                 "plt.show()"),
        ("md", "## A `torch.compile`d training step\nA linear model fitted by gradient descent, "
               "its step compiled. `rec.step` inside the compiled function is left to the host "
               "(one graph break per call, no recompilation per step); the loss is kept every "
               "step, the weights and their histogram every 10 steps."),
        ("code", "import torch\nfrom torch._dynamo.utils import counters\n\n"
                 "torch.manual_seed(0)\n"
                 "X = torch.randn(512, 8, dtype=torch.float64)\n"
                 "w_true = torch.linspace(-1, 1, 8, dtype=torch.float64)\n"
                 "y = X @ w_true + 0.1 * torch.randn(512, dtype=torch.float64)\n\n"
                 "@torch.compile\n"
                 "def train_step(rec, w, i):\n"
                 "    error = X @ w - y\n"
                 "    loss = (error ** 2).mean()\n"
                 "    w = w - 0.05 * 2 * X.T @ error / len(y)\n"
                 "    rec.step(i, loss=loss, w=w)\n"
                 "    return w\n\n"
                 "outputs = {\n"
                 "    'train': {'every': 1, 'diagnostics': ['loss']},\n"
                 "    'weights': {'every': 10, 'fields': ['w'], 'summaries': {'w': [\n"
                 "        {'histogram': {'bins': 16, 'range': [-1.5, 1.5]}}]}},\n"
                 "}\n"
                 "with simkit.record(work / 'train.nc', outputs) as rec:\n"
                 "    w = torch.zeros(8, dtype=torch.float64)\n"
                 "    for i in range(200):\n"
                 "        w = train_step(rec, w, torch.tensor(i))\n"
                 "print('graphs:', counters['stats']['unique_graphs'], "
                 "' recompilations:', sum(counters['recompiles'].values()))"),
        ("code", "from matplotlib.colors import LogNorm\n\n"
                 "train = xr.open_datatree(work / 'train.nc')\n"
                 "fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))\n"
                 "train['train'].to_dataset().loss.plot(ax=a, yscale='log')\n"
                 "train['weights'].to_dataset().w_histogram.T.plot(ax=b, x='step', y='w_bin', "
                 "cmap='viridis', norm=LogNorm(vmin=1))\n"
                 "plt.show()"),
    ],
}


#: The last cell of every notebook: its files (in ``tmp``, made by its first cell) are removed.
CLEANUP = "tmp.cleanup()  # remove this notebook's files"


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` from its cells, without outputs."""
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                             for kind, src in [*NOTEBOOKS[name], ("code", CLEANUP)]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in a fresh kernel started in this folder; outputs kept in it."""
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": str(HERE)}})
    client.execute()
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to write (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write them without outputs")
    args = parser.parse_args()
    for name in args.names or NOTEBOOKS:
        nb = build(name)
        nbformat.write(nb if args.no_execute else execute(nb), HERE / name)


if __name__ == "__main__":
    main()
