"""Bolt's listener runner, answering Slack the moment a listener acks.

With process_before_response=False, Bolt runs each listener in a task of its own and then
checks every 10 ms whether it has called ack() yet. Every answer was late by up to 10 ms,
and while a burst of commands waited for their budget reservations, each one woke the event
loop a hundred times a second just to look, which slowed the reservations they waited on.
Here ack() wakes the request directly. Everything else (start, error and completion
handlers, the ack timeout, lazy listeners) is Bolt's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.listener.async_listener import AsyncListener
from slack_bolt.listener.asyncio_runner import AsyncioListenerRunner
from slack_bolt.logger.messages import warning_did_not_call_ack
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse


class _SignallingAck(AsyncAck):
    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        try:
            return await super().__call__(*args, **kwargs)
        finally:
            self.answered.set()


class PromptAckRunner(AsyncioListenerRunner):
    async def run(
        self,
        request: AsyncBoltRequest,
        response: BoltResponse,
        listener_name: str,
        listener: AsyncListener,
        starting_time: float | None = None,
    ) -> BoltResponse | None:
        if self.process_before_response or request.lazy_only or listener.lazy_functions:
            return await super().run(request, response, listener_name, listener, starting_time)
        started = starting_time if starting_time is not None else time.time()
        ack = _SignallingAck()
        request.context["ack"] = ack
        if listener.auto_acknowledgement:
            await ack()  # events: answered at once, as Bolt does
        task = asyncio.ensure_future(self._run_listener(ack, request, response, listener))
        # a listener that ends (or fails) without acking stops the wait too
        task.add_done_callback(lambda _: ack.answered.set())
        remaining = listener.ack_timeout - (time.time() - started)
        try:
            async with asyncio.timeout(max(0.0, remaining)):  # no extra task, unlike wait_for
                await ack.answered.wait()
        except TimeoutError:
            pass
        if ack.response is None:
            self.logger.warning(warning_did_not_call_ack(listener_name))
            return None
        return ack.response

    async def _run_listener(
        self, ack: AsyncAck, request: AsyncBoltRequest, response: BoltResponse | None, listener: AsyncListener
    ) -> None:
        """Bolt's own steps for a listener run in the background."""
        try:
            await self.listener_start_handler.handle(request=request, response=response)
            await listener.run_ack_function(request=request, response=response)
        except Exception as e:
            if response is None:
                response = BoltResponse(status=500)
            response.status = 500
            if ack.response is not None:  # already acknowledged
                response = None
            await self.listener_error_handler.handle(error=e, request=request, response=response)  # type: ignore[arg-type]
            ack.response = response
        finally:
            await self.listener_completion_handler.handle(request=request, response=response)  # type: ignore[arg-type]


def install(app: AsyncApp) -> None:
    """Swap the app's runner for a PromptAckRunner with the same handlers. Call it before
    registering an error handler (Bolt sets that on whichever runner the app holds then)."""
    old = app.listener_runner
    # AsyncApp offers no setter; the attribute is the one its `listener_runner` returns
    app._async_listener_runner = PromptAckRunner(  # type: ignore[attr-defined]
        logger=old.logger,
        process_before_response=old.process_before_response,
        listener_error_handler=old.listener_error_handler,
        listener_start_handler=old.listener_start_handler,
        listener_completion_handler=old.listener_completion_handler,
        lazy_listener_runner=old.lazy_listener_runner,
    )
