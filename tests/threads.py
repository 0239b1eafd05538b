"""Run a worker in many threads at once and hand back what they raised (concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(n: int, target: Callable[[int], None], timeout_s: float = 120) -> list[BaseException]:
    """Start ``target(i)`` in ``n`` threads, join them, and return what they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout_s)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    return errors
