"""The runtime's Slack client: one session for every Web API call, closed with the runtime."""

from __future__ import annotations

from aiohttp import web

from bot.app import create_runtime
from bot.config import Settings
from bot.fakes.fakeslack import FakeSlack
from bot.providers.simulator import SimulatorProvider
from tests.conftest import FAST
from tests.slack_requests import SIGNING_SECRET


class PeerSlack(FakeSlack):
    """FakeSlack that notes the client end of every connection a Web API call came in on."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[tuple[str, int]] = []

    async def _handle_api(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.append(peer)
        return await super()._handle_api(request)


async def test_web_api_calls_share_one_connection_and_close_releases_it(tmp_path) -> None:
    async with PeerSlack() as fake:
        settings = Settings(_env_file=None, slack_bot_token="xoxb-test-token", slack_signing_secret=SIGNING_SECRET,
                            slack_api_url=fake.api_url, sora_db_path=tmp_path / "bot.db",
                            sora_default_model="simulator")
        runtime = await create_runtime(settings, providers={"simulator": SimulatorProvider(run_seconds=0.4)},
                                       timing=FAST, include_simulator=True)
        session = runtime.slack_session
        try:
            for _ in range(5):
                await runtime.deps.slack.auth_test()
        finally:
            await runtime.close()
        assert len(fake.peers) == 5 and len(set(fake.peers)) == 1
        assert session is not None and session.closed
