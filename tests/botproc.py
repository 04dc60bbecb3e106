"""A real `sora-bot run` process for tests: start, signal, read its database."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from bot.fakes.fakeslack import FakeSlack
from tests.slack_requests import SIGNING_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BotProcess:
    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port, self.log_path = env, port, log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=self.env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(300):
                if self.proc.returncode is not None:
                    raise AssertionError(f"bot exited early:\n{self.log_path.read_text()}")
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"bot never became healthy:\n{self.log_path.read_text()}")

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout=15)


async def read_jobs(db_path: Path) -> list[dict]:
    from bot.cli import jobs_json
    from storage.sqlite import SQLiteDatabase

    db = await SQLiteDatabase(db_path).open()
    try:
        return json.loads(await jobs_json(db, limit=0))
    finally:
        await db.close()


async def wait_until(predicate, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def bot_env(slack: FakeSlack, db_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The child's environment: none of the developer's Slack, Sora or provider settings."""
    prefixes = ("SLACK_", "SORA_", "VIDEO_", "OPENAI_", "RUNWAY", "GEMINI_", "KLING_", "ARK_", "FAL_")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
        "SLACK_BOT_TOKEN": "xoxb-restart-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SORA_DB_PATH": str(db_path),
        "SORA_POLL_INTERVAL": "0.2",
        "SORA_DAILY_BUDGET_USD": "20",
        "SORA_MAX_CONCURRENT_PER_USER": "10",
        **extra,
    }
