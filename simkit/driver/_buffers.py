"""Reusable host buffers for the captures a run copies to the host."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np


class HostBuffers:
    """Reusable host buffers for captures: a fresh large array costs page faults on first touch,
    a copy into a buffer that was used before does not. A buffer goes back to the pool once every
    capture holding it has been written."""

    def __init__(self) -> None:
        self._free: dict[tuple[tuple[int, ...], str], list[np.ndarray]] = {}
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, like: Any, users: int) -> np.ndarray:
        key = (tuple(like.shape), str(like.dtype).removeprefix("torch."))
        with self._lock:
            free = self._free.get(key)
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = np.empty(key[0], dtype=np.dtype(key[1]))
        with self._lock:
            self._users[id(buffer)] = users
        return buffer

    def give_back(self, arrays: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            for buffer in arrays.values():
                left = self._users.get(id(buffer))
                if left is None:
                    continue
                if left > 1:
                    self._users[id(buffer)] = left - 1
                else:
                    del self._users[id(buffer)]
                    key = (tuple(buffer.shape), str(buffer.dtype))
                    self._free.setdefault(key, []).append(buffer)
