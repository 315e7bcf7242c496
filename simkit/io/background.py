"""A writer thread behind a bounded queue: the compute loop hands captures over and goes on,
waiting only when the queue is full, so memory stays bounded however many captures a run makes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simkit.io._protocol import RunWriter

_STOP = object()
#: A write for the writer thread: the writer's method and its arguments.
_Write = tuple[Callable[..., None], tuple[Any, ...]]
_Item = Any  # a _Write, or _STOP


class BackgroundWriter:
    """Runs a ``RunWriter``'s writes on one thread, in order.

    An error on the writer thread is raised in the caller at the next ``capture``, ``final`` or
    ``close``; from the first error on, the thread writes nothing more (what is still queued is
    dropped), so a stream never has a capture missing before one that was written.

    Args:
        writer: the file writer; only the writer thread touches it after this.
        max_pending: captures queued before the next write waits (a write of several
            streams' captures counts one per stream, at most ``max_pending``).
        on_written: called on the writer thread with ``(stream, step, arrays)`` once a capture is
            synced (e.g. to hand its host buffers back for reuse).
        on_committed: called on the writer thread, before ``on_written``, with ``(stream,
            steps, times, arrays, stacked)`` once captures are synced: ``arrays`` hold one
            capture, or with ``stacked`` one per step along their first axis. The arrays may be
            reused afterwards: copy what is kept.
    """

    def __init__(self, writer: RunWriter, max_pending: int = 4,
                 on_written: Callable[[str, int, Mapping[str, np.ndarray]], None] | None = None,
                 on_committed: Callable[[str, list[int], list[float],
                                         Mapping[str, np.ndarray], bool], None] | None = None
                 ) -> None:
        self.writer = writer
        self.written = 0
        self._on_written = on_written
        self._on_committed = on_committed
        # Captures wait in the queue up to ``max_pending`` (the bound that keeps memory flat;
        # a write of several streams' captures takes the place of as many, up to all of it);
        # the markers of what is committed take no place of theirs.
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._max_pending = max_pending
        self._room = threading.Semaphore(max_pending)
        self._taking = threading.Lock()  # one producer takes its places at a time
        self._error: BaseException | None = None  # to raise in the caller, once
        self._failure: BaseException | None = None  # the first error; stays
        self._queued = 0  # captures handed over so far
        self._progress = threading.Condition()  # told after each batch the thread is done with
        self._thread = threading.Thread(target=self._run, name="simkit-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            # Take whatever else is waiting: one sync + fsync covers the whole batch.
            while batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            try:
                self._write(batch[:-1] if stop else batch)
            finally:
                for item in batch:
                    if item is not _STOP and item[0] != self.writer.committed:
                        self._room.release(self._places(item))
                with self._progress:
                    self._progress.notify_all()

    def _write(self, batch: list[_Write]) -> None:
        if self._failure is not None or not batch:
            return  # after an error: drain, so producers never block on a dead writer
        done = []
        committed = [args[0] for method, args in batch if method == self.writer.committed]
        batch = [item for item in batch if item[0] != self.writer.committed]
        try:
            # The whole batch must fit before any of it is written: a full disk then leaves
            # nothing half-written behind the captures already synced.
            self.writer.check_space(
                [one[0] for method, args in batch if method == self.writer.write_capture
                 for one in args]
                + [block[0] for method, args in batch if method == self.writer.write_block
                   for block in args for _ in block[1]])
            for method, args in batch:
                if method == self.writer.write_capture:
                    for stream, step, time, arrays in args:
                        method(stream, step, time, arrays, sync=False)
                        done.append((stream, [step], [time], arrays, False))
                elif method == self.writer.write_block:
                    for block in args:  # a block's captures of each stream
                        method(*block)
                        if block[1]:
                            done.append((*block, True))
                else:
                    method(*args)
            if done:
                self.writer.sync()
            if committed:  # after the sync of what they cover
                self.writer.committed(max(committed))
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            self._error = self._failure = error
            return
        self.written += sum(len(steps) for _, steps, _, _, _ in done)
        try:
            for stream, steps, times, arrays, stacked in done:
                if self._on_committed is not None:
                    self._on_committed(stream, steps, times, arrays, stacked)
                if self._on_written is not None:
                    self._on_written(stream, steps[-1], arrays)
        except BaseException as error:  # noqa: BLE001 - a caller's callback: ends the run
            self._error = self._failure = error

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def capture(self, stream: str, step: int, time: float, arrays: Mapping[str, np.ndarray]
                ) -> None:
        """Queue one capture (host copies the caller no longer touches)."""
        self.capture_many([(stream, step, time, arrays)])

    def capture_many(self, captures: list[tuple[str, int, float, Mapping[str, np.ndarray]]]
                     ) -> None:
        """Queue captures of several streams, ``(stream, step, time, arrays)`` each, as one
        write with one sync (see ``capture_blocks``)."""
        self._raise_pending()
        self._queued += len(captures)
        self._put((self.writer.write_capture, tuple(captures)))

    def capture_blocks(self, blocks: list[tuple[str, list[int], list[float],
                                                Mapping[str, np.ndarray]]]) -> None:
        """Queue a block's captures of several streams, ``(stream, steps, times, arrays)``
        each, as one write with one sync: a sync costs about as much as the file has streams,
        so a sync per stream made each block cost the square of their number."""
        self._raise_pending()
        self._queued += sum(len(steps) for _, steps, _, _ in blocks)
        self._put((self.writer.write_block, tuple(blocks)))

    def committed(self, step: int) -> None:
        """Mark every capture due up to ``step`` as queued: once they are synced, the file says
        so (see ``RunWriter.committed``)."""
        self._raise_pending()
        self._queue.put((self.writer.committed, (step,)))

    def final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None:
        """Queue the final state."""
        self._raise_pending()
        self._put((self.writer.write_final, (step, time, arrays)))

    def _places(self, item: _Write) -> int:
        """The places in the queue a write takes: one per stream it writes, at most all."""
        method, args = item
        several = method in (self.writer.write_capture, self.writer.write_block)
        return min(len(args), self._max_pending) if several else 1

    def _put(self, item: _Write) -> None:
        """Queue a write, waiting while ``max_pending`` places are taken."""
        with self._taking:
            for _ in range(self._places(item)):
                self._room.acquire()
        self._queue.put(item)

    def flush(self) -> None:
        """Wait until every capture handed over so far is in the file, synced and fsync'ed;
        raise the writer thread's error, if any (after which nothing more is written)."""
        with self._progress:
            self._progress.wait_for(lambda: self.written >= self._queued
                                    or self._failure is not None
                                    or not self._thread.is_alive())
        self._raise_pending()

    @property
    def partial_path(self) -> Path:
        """The file that holds the run if it stops unfinished."""
        return self.writer.partial_path

    def _join(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def close(self, attrs: Mapping[str, object] | None = None) -> Path:
        """Wait for every queued write, then finish the file."""
        self._join()
        if self._failure is not None:
            self._error = None
            raise self._failure  # the caller closes the file as failed (``abort``)
        return self.writer.close(attrs)

    def abort(self, attrs: Mapping[str, object] | None = None) -> Path:
        """Write what is queued, then close the file as unfinished."""
        self._join()
        self._error = None
        return self.writer.abort(attrs)
