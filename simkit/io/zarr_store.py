"""Where a Zarr run lives: an Icechunk repository on local disk (a path ending in ``.zarr``) or in
S3 (``s3://bucket/prefix/run.zarr``, credentials, region and endpoint from the environment as the
AWS tools read them), opened for the run's writer and readers.

Only the ``simkit.io.zarr*`` modules import ``icechunk`` and ``zarr``.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import zarr
from zarr.storage import StorePath

from simkit.errors import ScenarioError
from simkit.io.zarr_paths import is_s3, location

#: The branch every run is written on and read from.
BRANCH = "main"
#: A Zarr array of any data type.
ZArray = zarr.Array[Any]


@cache
def _quiet() -> None:
    # Icechunk warns on stderr that local repositories take one committer at a time: a run is
    # the only writer of its repository (and simkit's lock keeps a second one off).
    icechunk.set_logs_filter("error")


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def storage(path: str | os.PathLike[str]) -> icechunk.Storage:
    """The Icechunk storage of the run at ``path`` (a local path, or an ``s3://`` URL)."""
    _quiet()
    where = location(path)
    if not is_s3(where):
        return icechunk.local_filesystem_storage(str(Path(where).absolute()))
    bucket, _, prefix = where[len("s3://"):].partition("/")
    if not bucket or not prefix.strip("/"):
        raise ScenarioError(f"expected an S3 output as s3://bucket/prefix/run.zarr, given "
                            f"{where!r}", key="output")
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    given = key is not None and secret is not None
    return icechunk.s3_storage(
        bucket=bucket, prefix=prefix.strip("/"),
        region=_env("AWS_REGION", "AWS_DEFAULT_REGION"), endpoint_url=endpoint,
        allow_http=bool(endpoint and endpoint.startswith("http://")),
        access_key_id=key if given else None, secret_access_key=secret if given else None,
        session_token=_env("AWS_SESSION_TOKEN") if given else None,
        from_env=None if given else True,
        # Endpoints other than AWS (MinIO, moto, Ceph) serve buckets under the path.
        force_path_style=endpoint is not None)


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether an Icechunk repository is at ``path``."""
    where = location(path)
    if not is_s3(where) and not Path(where).is_dir():
        return False
    return bool(icechunk.Repository.exists(storage(where)))


def open_repository(path: str | os.PathLike[str]) -> icechunk.Repository:
    """The existing repository at ``path``.

    Raises:
        FileNotFoundError: there is none.
    """
    if not exists(path):
        raise FileNotFoundError(f"no Zarr run at {location(path)}")
    repo: icechunk.Repository = icechunk.Repository.open(storage(path))
    return repo


def create_repository(path: str | os.PathLike[str]) -> icechunk.Repository:
    """A new, empty repository at ``path``."""
    repo: icechunk.Repository = icechunk.Repository.create(storage(path))
    return repo


def root(store: icechunk.IcechunkStore, mode: str = "r") -> zarr.Group:
    """The root group of a session's store (``mode`` as ``zarr.open_group`` takes it)."""
    if mode == "w":
        return zarr.open_group(StorePath(store), mode="w", zarr_format=3)
    return zarr.open_group(StorePath(store), mode="r+" if mode == "r+" else "r",
                           zarr_format=3)


def array(group: zarr.Group, name: str) -> ZArray:
    """The array ``name`` (a path below ``group``)."""
    found = group[name]
    if not isinstance(found, zarr.Array):
        raise KeyError(f"{name!r} is not an array")
    return found


def read(array: ZArray, index: Any = ...) -> np.ndarray:
    """``array[index]`` as a NumPy array."""
    return np.asarray(array[index])


def dims(array: ZArray) -> tuple[str, ...]:
    """An array's dimension names (Zarr v3's ``dimension_names``)."""
    names = getattr(array.metadata, "dimension_names", None)
    return tuple(str(n) for n in names) if names else ()
