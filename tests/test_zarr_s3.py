"""Zarr runs in S3 (``output: s3://bucket/prefix/run.zarr``) against a real S3 endpoint on
localhost (moto's server), credentials and endpoint from the environment as the AWS tools read
them: create, write, SIGKILL, resume bit for bit, read with xarray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import icechunk
import numpy as np
import pytest
import xarray as xr
from moto.server import ThreadedMotoServer

import simkit
from conftest import assert_bitwise
from simkit.api import run_or_resume
from simkit.errors import ScenarioError
from simkit.io import open_reader, schema

TESTS = Path(__file__).parent
URL = "s3://runs/project/heat.zarr"
SCENARIO = """\
solver: heat2d
params: {shape: [32, 32]}
initial: {kind: noise, amplitude: 1.0}
steps: 1200
seed: 5
flush_seconds: 0.1
outputs:
  snaps: {every: 20, fields: [u]}
  diag: {every: 4, diagnostics: [energy]}
  checkpoint: {every: 100, fields: all}
output: local.zarr
"""
_REPORTING = """\
import sys
import simkit

def report(step, time, written, total):
    print(written, flush=True)

simkit.run("s.yaml", output=sys.argv[1], progress=report)
"""


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3 server on a free port of localhost, with a bucket ``runs``; the environment
    the AWS tools read (keys, region, endpoint)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket="runs")
    yield env
    server.stop()


@pytest.fixture
def aws(endpoint, monkeypatch):
    for key, value in endpoint.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return endpoint


def _contents(path: str) -> dict[str, dict[str, np.ndarray]]:
    with open_reader(path) as reader:
        assert reader.whole_counts() == reader.lengths()
        return {name: {"step": reader.captures(name).steps, **reader.captures(name).arrays}
                for name in reader.streams()}


def test_write_kill_resume_and_read_with_xarray_in_s3(aws, in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    reference = simkit.run("s.yaml")
    env = {**os.environ, **aws, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    proc = subprocess.Popen([sys.executable, "-c", _REPORTING, URL], cwd=in_tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    while not reported:  # kill it once some captures are committed
        reported = int(proc.stdout.readline())
    proc.kill()
    proc.communicate()
    assert proc.returncode == -9
    ref = _contents("local.zarr")
    got = _contents(URL)
    assert sum(len(found["step"]) for found in got.values()) >= reported > 0
    for name, found in got.items():
        n = len(found["step"])
        for var, value in ref[name].items():
            assert_bitwise(found[var], value[:n])
    with open_reader(URL) as reader:
        assert reader.status() == schema.STATUS_RUNNING
    resumed = subprocess.run([sys.executable, "-m", "simkit", "resume", URL, "-q"], cwd=in_tmp,
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == URL + "\n"  # the URL as given
    got = _contents(URL)
    for name, found in ref.items():
        for var, value in found.items():
            assert_bitwise(got[name][var], value)
    # As a user reads it from anywhere: xarray through Icechunk's store.
    storage = icechunk.s3_storage(bucket="runs", prefix="project/heat.zarr", from_env=True,
                                  endpoint_url=aws["AWS_ENDPOINT_URL"], allow_http=True,
                                  force_path_style=True, region="us-east-1")
    store = icechunk.Repository.open(storage).readonly_session(branch="main").store
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert tree.attrs[schema.ATTR_STATUS] == schema.STATUS_COMPLETE
    assert "resume" in tree.attrs[schema.ATTR_HISTORY].splitlines()[-1]
    assert_bitwise(tree["snaps"].to_dataset().u.values, ref["snaps"]["u"])
    assert_bitwise(tree.to_dataset().u.values, reference.state["u"])


def test_an_s3_run_is_resumed_or_left_alone_by_run_resume(aws, in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO.replace("steps: 1200", "steps: 60"))
    url = "s3://runs/project/short.zarr"
    action, result = run_or_resume("s.yaml", output=url)
    assert action == "started" and result.step == 60
    action, result = run_or_resume("s.yaml", output=url)
    assert action == "complete" and result.step == 60
    with pytest.raises(ScenarioError, match="given 's3://runs/project/short.zarr' which exists"):
        simkit.run("s.yaml", output=url)


def test_a_bucket_url_without_a_prefix_is_refused(aws, in_tmp):
    (in_tmp / "s.yaml").write_text(SCENARIO)
    with pytest.raises(ScenarioError,
                       match="expected an S3 output as s3://bucket/prefix/run.zarr"):
        simkit.run("s.yaml", output="s3://runs")
