"""Telling a Zarr run's location from a NetCDF file's without importing Zarr: a path ending in
``.zarr`` or an ``s3://`` URL (NetCDF stays the default for every other output)."""

from __future__ import annotations

import os


def location(path: str | os.PathLike[str]) -> str:
    """``path`` as text; an S3 URL that went through ``pathlib.Path`` (``s3:/bucket/x``) gets its
    second slash back."""
    text = os.fspath(path)
    if text.startswith("s3:/") and not text.startswith("s3://"):
        text = "s3://" + text[len("s3:/"):]
    return text


def is_s3(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ``s3://`` URL."""
    return location(path).startswith("s3://")


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether the run at ``path`` is (to be) written as Zarr: an ``s3://`` URL or a path whose
    name ends in ``.zarr``."""
    text = location(path)
    return is_s3(text) or text.rstrip("/").lower().endswith(".zarr")
