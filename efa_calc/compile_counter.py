"""Counting XLA compilations (``jax.monitoring`` backend-compile events).

    with CompileCounter() as cc:
        run_md()
    print(cc.count)
"""

from __future__ import annotations

from jax import monitoring

__all__ = ["CompileCounter"]

_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Context manager counting backend compilations (and their seconds) while active."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self.names: list[str] = []  # the compiled functions' names, in order
        self._active = False

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if self._active and event == _EVENT:
            self.count += 1
            self.seconds += duration
            self.names.append(str(kwargs.get("fun_name", "")))

    def __enter__(self) -> "CompileCounter":
        self._active = True
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        monitoring.unregister_event_duration_listener(self._listener)
