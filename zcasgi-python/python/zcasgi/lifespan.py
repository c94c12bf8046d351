"""The ASGI ``lifespan`` protocol: startup and shutdown events with shared state."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Lifespan", "LifespanFailure"]

logger = logging.getLogger("zcasgi")


class LifespanFailure(RuntimeError):
    """The application reported ``lifespan.startup.failed`` (or raised with lifespan="on")."""


class Lifespan:
    """Runs the application's lifespan task beside the server.

    Args:
        app: The ASGI application.
        mode: ``"auto"`` tolerates applications without lifespan support, ``"on"`` requires it,
            ``"off"`` never calls the application with the lifespan scope.
    """

    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._receive_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occurred = False
        self.failure_message = ""
        self.supported = mode != "off"

    async def startup(self) -> None:
        """Sends ``lifespan.startup`` and waits for the answer.

        Raises:
            LifespanFailure: if startup failed.
        """
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._receive_queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self.startup_failed or (self.error_occurred and self.mode == "on"):
            raise LifespanFailure(self.failure_message or "application startup failed")
        if self.supported:
            logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        """Sends ``lifespan.shutdown`` and waits for the answer (failures are logged)."""
        if self._task is None or not self.supported or self.error_occurred:
            return
        logger.info("Waiting for application shutdown.")
        await self._receive_queue.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self.shutdown_failed or (self.mode == "on" and self._errored()):
            logger.error("Application shutdown failed. Exiting.")
        else:
            logger.info("Application shutdown complete.")

    def _errored(self) -> bool:
        # A method, not the attribute: the lifespan task sets it while we await.
        return self.error_occurred

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.mode == "auto":
                self.supported = False
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.failure_message = f"exception in 'lifespan' protocol: {exc!r}"
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict[str, Any]:
        return await self._receive_queue.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.startup_failed = True
            self.failure_message = str(message.get("message") or "application startup failed")
            logger.error("Application startup failed: %s", self.failure_message)
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_failed = True
            logger.error("Application shutdown failed: %s", message.get("message") or "")
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
