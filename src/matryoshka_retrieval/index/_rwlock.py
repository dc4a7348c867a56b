"""A readers-writer lock: many searches at once, or one writer alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["RWLock"]


class _Side:
    """One side of the lock as a reusable context manager (no generator frame per use: a search
    takes the read side once per call)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()


class RWLock:
    """Readers share the lock; a writer waits for them and blocks new readers while waiting.

    Not reentrant: a thread that holds the read side and asks for it again can wait forever
    behind a writer that queued in between.

    Example:
        >>> lock = RWLock()
        >>> with lock.read():  # other threads may read at the same time
        ...     pass
        >>> with lock.write():
        ...     pass
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._read = _Side(self._acquire_read, self._release_read)
        self._write = _Side(self._acquire_write, self._release_write)

    def read(self) -> _Side:
        """The shared side, for ``with lock.read():``."""
        return self._read

    def write(self) -> _Side:
        """The exclusive side, for ``with lock.write():``."""
        return self._write

    def _acquire_read(self) -> None:
        with self._mutex:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._mutex:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._mutex:
            self._writer = False
            self._cond.notify_all()
