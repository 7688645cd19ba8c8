"""Running a call in a thread other than the main one (a notebook kernel's worker, Ray, Gradio), for the tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def call_in_thread(fn: Callable[[], Any], timeout_s: float = 300) -> Any:
    """fn() in a new thread, its result returned here; whatever it raised is raised here; bounded by timeout_s."""
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 (the thread hands any failure to the caller)
            out["error"] = e

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=timeout_s)
    assert not worker.is_alive(), f"the call did not return within {timeout_s} s"
    if "error" in out:
        raise out["error"]
    return out["result"]
