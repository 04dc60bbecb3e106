"""The container image without a Docker engine: the Dockerfile's own install, start and health
commands run here in a fresh virtualenv, and compose.yaml's services checked against Settings."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from bot.config import Settings
from bot.fakes.fakeslack import FakeSlack
from tests.botproc import free_port
from tests.slack_requests import SIGNING_SECRET

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths and signals")

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
SECRET_ENV = {name.upper() for name, field in Settings.model_fields.items() if "Secret" in str(field.annotation)}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _one(instructions: list[tuple[str, str]], word: str) -> str:
    found = [args for w, args in instructions if w == word]
    assert len(found) == 1, f"expected one {word}, found {found}"
    return found[0]


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))  # the KEY=value form only
    return env


def _volume(instructions: list[tuple[str, str]]) -> PurePosixPath:
    args = _one(instructions, "VOLUME")
    paths = json.loads(args) if args.startswith("[") else args.split()
    assert len(paths) == 1, paths
    return PurePosixPath(paths[0])


def _healthcheck(instructions: list[tuple[str, str]]) -> list[str]:
    """HEALTHCHECK's command, in the exec form (the shell form would need a shell and quoting)."""
    match = re.search(r"(?:^|\s)CMD\s+(\[.*\])\s*$", _one(instructions, "HEALTHCHECK"))
    assert match, "HEALTHCHECK CMD [...] in the exec form"
    return json.loads(match.group(1))


def _install_command(instructions: list[tuple[str, str]]) -> list[str]:
    runs = [shlex.split(args) for word, args in instructions if word == "RUN" and "pip" in shlex.split(args)]
    assert len(runs) == 1, runs
    return runs[0]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `rel` out of the build context (the patterns used here:
    names at the top, `**/` anywhere; no `!` exceptions)."""
    parts = PurePosixPath(rel).parts
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif fnmatch.fnmatch(parts[0], pattern):
            return True
    return False


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "_ignored doesn't handle exceptions"
    return patterns


def _copy_context(instructions: list[tuple[str, str]], image: Path) -> Path:
    """Carry out the COPY instructions from this work tree into `image` (the image's /), as
    the build context .dockerignore leaves would; the WORKDIR they copy into."""
    ignore = _dockerignore()
    workdir = PurePosixPath("/")
    for word, args in instructions:
        if word == "WORKDIR":
            workdir = workdir / args
        elif word == "RUN" and "pip" in shlex.split(args):
            return image / workdir.relative_to("/")
        elif word == "COPY":
            *sources, dest = shlex.split(args)
            target = image / (workdir / dest).relative_to("/")
            for source in sources:
                assert not _ignored(source, ignore), f"COPY {source}, but .dockerignore leaves it out"
                src = ROOT / source
                if src.is_dir():
                    shutil.copytree(src, target, dirs_exist_ok=True, ignore=lambda folder, names: [
                        n for n in names if _ignored(str((Path(folder) / n).relative_to(ROOT)), ignore)])
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name if dest.endswith("/") else target)
    raise AssertionError("no RUN pip install in the Dockerfile")


def _fresh_venv(folder: Path) -> Path:
    """A virtualenv without this project whose dependencies come from the test interpreter's.

    Offline and in about a second: `venv --system-site-packages` would see the base Python's
    packages, not this virtualenv's, and a pip install of the dependencies needs the network.
    So the new venv has no pip of its own and reaches the installed packages through a .pth
    line naming a folder of links to them: every one but this project's editable install
    (whose finder would import the work tree, not the package the Dockerfile installs).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    layer = folder.parent / "layer"
    layer.mkdir()
    for path in Path(site.getsitepackages()[0]).iterdir():
        if not path.name.startswith(("sora_bot", "__editable__")):
            (layer / path.name).symlink_to(path)
    own = next(folder.glob("lib/python*/site-packages"))
    (own / "layered.pth").write_text(f"{layer}\n")
    return folder


def _can_build_wheels_offline() -> bool:
    # setuptools builds wheels by itself from 70.1; before, it needs the `wheel` package
    import importlib.util

    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


async def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_the_dockerfile_installs_starts_and_passes_its_healthcheck(tmp_path) -> None:
    assert _can_build_wheels_offline(), (
        "the test interpreter's setuptools can't build a wheel offline: the dev extras need setuptools>=70.1")
    instructions = dockerfile()
    workdir = _copy_context(instructions, tmp_path / "image")
    venv = _fresh_venv(tmp_path / "venv")
    image_env = _env(instructions)
    volume = _volume(instructions)
    data = tmp_path / "data"  # what the volume is mounted from
    data.mkdir()
    port = free_port()
    env = {
        # no Slack, Sora or provider settings of the developer's: only the image's and these
        **{k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR", "SYSTEMROOT")},
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",  # `pip`, `sora-bot`, `python`: the venv's
        "PIP_CONFIG_FILE": os.devnull,  # this machine's pip settings (indexes) play no part
        **image_env,
        "SORA_DB_PATH": str(data / PurePosixPath(image_env["SORA_DB_PATH"]).relative_to(volume)),
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }

    # RUN pip install …: as written, plus what keeps it offline here (Docker's build may fetch
    # the build backend and the dependencies; here they are already installed)
    install = _install_command(instructions)
    assert install[:2] == ["pip", "install"] and "." in install and not any("[" in a for a in install), install
    argv = [str(venv / "bin" / "python"), "-m", *install, "--no-deps", "--no-build-isolation", "--no-index"]
    code, out = await _run(argv, env=env, cwd=workdir, timeout=60)
    assert code == 0, out
    code, where = await _run([str(venv / "bin" / "python"), "-c", "import bot; print(bot.__file__)"],
                             env=env, cwd=tmp_path, timeout=20)
    assert code == 0 and Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the work tree

    check = _healthcheck(instructions)
    code, _ = await _run(check, env=env, cwd=workdir, timeout=20)
    assert code != 0, "the healthcheck passes with no bot running"

    cmd = json.loads(_one(instructions, "CMD"))
    async with FakeSlack() as slack:
        env.update(SLACK_BOT_TOKEN="xoxb-container-test", SLACK_SIGNING_SECRET=SIGNING_SECRET,
                   SLACK_API_URL=slack.api_url)
        log = (tmp_path / "bot.log").open("wb")
        bot = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=workdir, stdout=log, stderr=log,
                                                   stdin=subprocess.DEVNULL)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                assert bot.returncode is None, (tmp_path / "bot.log").read_text()
                code, out = await _run(check, env=env, cwd=workdir, timeout=10)
                if code == 0:
                    break
                assert loop.time() < deadline, f"never healthy: {out}\n{(tmp_path / 'bot.log').read_text()}"
                await asyncio.sleep(0.1)
            assert Path(env["SORA_DB_PATH"]).exists()  # the database is on the volume
            bot.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot.wait(), 15) == 0
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
            log.close()


def test_the_image_runs_as_a_user_with_its_database_on_a_volume_it_owns() -> None:
    instructions = dockerfile()
    words = [w for w, _ in instructions]

    base = _one(instructions, "FROM")
    match = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", base)
    assert match, f"an official slim Python image, pinned to a minor version: {base}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert match.group(1) in SpecifierSet(requires), (base, requires)

    user = _one(instructions, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert words.index("USER") < words.index("CMD")
    install_at = next(i for i, (w, a) in enumerate(instructions) if w == "RUN" and "pip" in shlex.split(a))
    assert install_at < words.index("USER")  # installed as root, run as the user

    volume = _volume(instructions)
    db_path = PurePosixPath(_env(instructions)["SORA_DB_PATH"])
    assert db_path.is_relative_to(volume), (db_path, volume)
    # the volume's folder is given to the user before VOLUME (later changes are discarded)
    chown = [i for i, (w, a) in enumerate(instructions)
             if w == "RUN" and re.search(rf"chown\s+(-\S+\s+)*{re.escape(user)}(:\S+)?\s+{re.escape(str(volume))}\b", a)]
    assert chown and chown[0] < words.index("VOLUME"), "the volume's folder is not chowned to the user before VOLUME"

    assert _one(instructions, "EXPOSE") == str(Settings.model_fields["port"].default)
    assert json.loads(_one(instructions, "CMD")) == ["sora-bot", "run"]

    ignored = _dockerignore()
    for secret_or_data in (".env", ".git", "sora-bot.db", "sub/x.db", "venv", "bot/__pycache__"):
        assert _ignored(secret_or_data, ignored), secret_or_data


def test_compose_runs_migrate_once_then_two_replicas_on_postgres_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "bot-1", "bot-2"} <= set(services)

    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]  # a named volume, not the container's own layer

    migrate = services["migrate"]
    assert migrate["command"] == ["sora-bot", "migrate"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"

    for name in ("migrate", "bot-1", "bot-2"):
        service = services[name]
        assert service["image"] == services["bot-1"]["image"] and service["env_file"] == ".env"
        env = service["environment"]
        assert set(env) <= SETTINGS_ENV, f"{name}: settings the bot doesn't know: {set(env) - SETTINGS_ENV}"
        # secrets come from .env; the database URL's password too, through compose's substitution
        assert not set(env) & (SECRET_ENV - {"SORA_DATABASE_URL"}), name
        url = env["SORA_DATABASE_URL"]
        assert "${POSTGRES_PASSWORD" in url and "@db:" in url, url
        filled = re.sub(r"\$\{POSTGRES_PASSWORD[^}]*\}", "pw", url)
        Settings(_env_file=None, sora_database_url=filled, sora_log_format=env.get("SORA_LOG_FORMAT", "text"))
    for name in ("bot-1", "bot-2"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name].get("command", ["sora-bot", "run"]) == ["sora-bot", "run"]
    assert "${POSTGRES_PASSWORD" in db["environment"]["POSTGRES_PASSWORD"]
