"""Event-sending plugin example: forwards handler events as JSON to an HTTP endpoint.

Settings: ``targetUrl`` (where to POST; when unset the events are only logged).
"""

from aiohttp import ClientSession, ClientTimeout
from log import Logger

from luna_plugins.base.plugins_meta.base_plugins import T_LUNA_APPLICATION
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event, RawEvent


class HttpForwarder(BaseEventSendingPlugin):
    """POSTs one JSON document per batch of events."""

    def __init__(self, app: T_LUNA_APPLICATION):
        super().__init__(app)
        self.target = self.settings.get("targetUrl")
        self.session: ClientSession | None = None

    async def initialize(self):
        if self.target:
            self.session = ClientSession(timeout=ClientTimeout(total=5))

    async def close(self):
        if self.session:
            await self.session.close()

    async def sendEvents(
        self,
        events: list[Event | RawEvent],
        handlerId: str,
        accountId: str,
        requestId: str,
        createEventTime: str,
        endEventTime: str,
        logger: Logger,
        *args,
        **kwargs,
    ) -> None:
        documents = [e.asDict() if isinstance(e, Event) else e.asHandlerEventDict() for e in events]
        if self.session is None:
            logger.info("%d event(s) of handler %s (no targetUrl set)", len(documents), handlerId)
            return
        message = {
            "handlerId": handlerId,
            "accountId": accountId,
            "requestId": requestId,
            "createEventTime": createEventTime,
            "endEventTime": endEventTime,
            "events": documents,
        }
        async with self.session.post(self.target, json=message) as response:
            if response.status >= 300:
                raise RuntimeError(f"{self.target} answered {response.status}: {await response.text()}")
