"""The `rekindle` command line, run as a subprocess: check, schema, token, verify, serve's set-up errors."""

from __future__ import annotations

import json
import random
import shlex
import subprocess
from pathlib import Path

import httpx
import jwt
import pytest
import redis

from engine.keys import Keys
from tests.realtime.conftest import (
    EXAMPLE_CONFIG,
    REKINDLE,
    ROOT,
    TOKEN_SECRET,
    Service,
    free_port,
    purchase,
    run_cli,
    service_env,
    start_service,
    unique,
)


def test_check_example_is_ok() -> None:
    """`rekindle check config/member_day.toml` exits 0 and says ok."""
    done = run_cli("check", "config/member_day.toml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: config/member_day.toml:")
    assert done.stderr == ""


def test_check_names_every_problem_with_file_and_key_path(tmp_path: Path) -> None:
    """A copy with an unknown key and a bad reference exits 1 and prints both as <file>: <key path>: <reason>."""
    broken = tmp_path / "broken.toml"
    text = EXAMPLE_CONFIG.read_text()
    text = text.replace("daily_cap = 5_000\n", "daly_cap = 5_000\n", 1)  # rules.purchase_points
    text = text.replace('kind = "once"\nevent = "purchase"', 'kind = "once"\nevent = "purchse"', 1)  # quests.first_order
    broken.write_text(text)
    done = run_cli("check", str(broken))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert f"{broken}: rules.purchase_points.daly_cap: unknown key (check its spelling; see config/program.schema.json)" in lines
    assert any(line.startswith(f"{broken}: quests.first_order.event: ") and "purchse" in line for line in lines), lines
    assert all(line.startswith(f"{broken}: ") for line in lines)


def test_check_of_two_files_reports_each(tmp_path: Path) -> None:
    """Checking a good and a bad file exits 1, says ok for the good one and names the bad one's problem."""
    broken = tmp_path / "tiers.toml"
    broken.write_text(EXAMPLE_CONFIG.read_text().replace("xp = 1_000\n", "xp = 0\n", 1))
    done = run_cli("check", "config/member_day.toml", str(broken))
    assert done.returncode == 1
    assert done.stdout.startswith("ok: config/member_day.toml:")
    assert f"{broken}: tiers[silver].xp: must be greater than the tier before it (0)" in done.stderr.splitlines()


def test_check_of_missing_file_exits_1(tmp_path: Path) -> None:
    """A file that does not exist is a problem named with its path."""
    done = run_cli("check", str(tmp_path / "nope.toml"))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path / 'nope.toml'}: ")


def test_schema_matches_the_committed_file() -> None:
    """`rekindle schema` prints JSON equal to config/program.schema.json."""
    done = run_cli("schema")
    assert done.returncode == 0, done.stderr
    committed = json.loads((ROOT / "config" / "program.schema.json").read_text())
    assert json.loads(done.stdout) == committed


def test_token_prints_a_jwt_for_the_member(cli_env: dict[str, str]) -> None:
    """`rekindle token m-1` prints an HS256 JWT with sub m-1, signed with REKINDLE_TOKEN_SECRET."""
    done = run_cli("token", "m-1", "--ttl", "120", env=cli_env)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), TOKEN_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "m-1"
    assert claims["exp"] - claims["iat"] == 120
    assert done.stderr == ""


@pytest.mark.parametrize("member", ["m{1}", "m 1", "", "m" * 65], ids=["braces", "space", "empty", "too_long"])
def test_token_refuses_a_bad_member_id(cli_env: dict[str, str], member: str) -> None:
    """`rekindle token` with an unsafe member id exits 2 and prints no token."""
    done = run_cli("token", member, env=cli_env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "member" in done.stderr


def test_token_with_the_shortest_allowed_secret_prints_only_the_token(cli_env: dict[str, str]) -> None:
    """A 32-byte secret (the minimum the service accepts) mints a token with nothing on stderr."""
    env = {**cli_env, "REKINDLE_TOKEN_SECRET": "0123456789abcdef0123456789abcdef"}
    done = run_cli("token", "m-1", env=env)
    assert done.returncode == 0
    assert jwt.decode(done.stdout.strip(), options={"verify_signature": False})["sub"] == "m-1"
    assert done.stderr == "", done.stderr


def test_development_secrets_from_serve_work_with_the_token_command(tmp_path: Path, redis_url: str) -> None:
    """Without configured secrets, serve prints a development API key and `rekindle token` mints tokens it accepts."""
    data_dir = tmp_path / "data"
    no_secrets = {"REKINDLE_API_KEYS": "", "REKINDLE_ADMIN_KEYS": "", "REKINDLE_TOKEN_SECRET": ""}
    service = start_service(redis_url, unique("p"), data_dir, env=no_secrets)
    try:
        banner = service.stdout_text()
        [key] = [line.split()[-1] for line in banner.splitlines() if "development API key" in line]
        member = unique("m")
        with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {key}"}) as shop:
            assert shop.post("/v1/events", json=purchase(member)).status_code == 200
            done = run_cli("token", member, "--data-dir", str(data_dir), env=service_env("rk", **no_secrets))
            assert done.returncode == 0, done.stderr
            me = shop.get("/v1/me", headers={"authorization": f"Bearer {done.stdout.strip()}"})
            assert me.status_code == 200, me.text
            assert me.json()["member"] == member
    finally:
        service.stop()
    assert key not in service.stderr_text()


def test_the_banners_token_command_works_as_printed(tmp_path: Path, redis_url: str) -> None:
    """Serve on a --data-dir of its own prints a token command that, run as printed, mints a token it accepts."""
    data_dir = tmp_path / "data"
    no_secrets = {"REKINDLE_API_KEYS": "", "REKINDLE_ADMIN_KEYS": "", "REKINDLE_TOKEN_SECRET": ""}
    service = start_service(redis_url, unique("p"), data_dir, env=no_secrets)
    try:
        banner = service.stdout_text().splitlines()
        [key] = [line.split()[-1] for line in banner if "development API key" in line]
        [command] = [line.split(":", 1)[1].strip() for line in banner if line.strip().startswith("member token:")]
        # A shell whose own default data folder is elsewhere: the command must name this one.
        shell_env = service_env("rk", **no_secrets, REKINDLE_DATA_DIR=str(tmp_path / "elsewhere"))
        done = subprocess.run(shlex.split(command), cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        member = jwt.decode(done.stdout.strip(), options={"verify_signature": False})["sub"]
        with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {key}"}) as shop:
            assert shop.post("/v1/events", json=purchase(member)).status_code == 200
            me = shop.get("/v1/me", headers={"authorization": f"Bearer {done.stdout.strip()}"})
            assert me.status_code == 200, me.text
            assert me.json()["member"] == member
    finally:
        service.stop()


def test_verify_passes_then_catches_a_tampered_balance(
    service: Service, shop: httpx.Client, sync_redis: redis.Redis, cli_env: dict[str, str]
) -> None:
    """`rekindle verify` exits 0 after real events, and 1 naming the member once a balance is tampered."""
    members = [unique("m") for _ in range(3)]
    for m in members:
        assert shop.post("/v1/events", json=purchase(m)).status_code == 200
        assert shop.post("/v1/events", json={"id": unique("i"), "member": m, "type": "invite", "data": {"invitee": "x"}}).status_code == 200
    args = ("verify", "--redis-url", service.redis_url, "--prefix", service.prefix)
    done = run_cli(*args, env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok: ")
    assert "| points: balance = lots = ledger" in done.stdout  # the table of every check

    profile = Keys(service.prefix).member(members[1]).profile
    sync_redis.hincrby(profile, "pts", 5)
    try:
        done = run_cli(*args, env=cli_env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"BREACH points: balance = lots = ledger: member {members[1]}: " in done.stdout
        assert f"(balance {299 + 300 + 5}, ledger {299 + 300})" in done.stdout
        assert "FAILED" in done.stdout
        assert members[0] not in done.stdout
    finally:
        sync_redis.hincrby(profile, "pts", -5)
    assert run_cli(*args, env=cli_env).returncode == 0


def test_verify_of_an_unreachable_server_exits_2(cli_env: dict[str, str]) -> None:
    """`rekindle verify` against a server that does not answer exits 2."""
    done = run_cli("verify", "--redis-url", f"redis://127.0.0.1:{free_port()}", "--prefix", "nobody", env=cli_env)
    assert done.returncode == 2
    assert "cannot reach" in done.stderr


def test_serve_refuses_an_invalid_programme(tmp_path: Path, redis_url: str) -> None:
    """`rekindle serve` with an invalid programme exits 2 naming the problem, before listening."""
    broken = tmp_path / "broken.toml"
    broken.write_text(EXAMPLE_CONFIG.read_text().replace("[program]\n", "[program]\nnmae = 'x'\n", 1))
    done = run_cli(
        "serve", "--port", str(free_port()), "--redis-url", redis_url, "--config", str(broken),
        "--data-dir", str(tmp_path / "data"), env=service_env(unique("p")),
    )
    assert done.returncode == 2
    assert f"{broken}: program.nmae: unknown key" in done.stderr


def test_serve_refuses_a_short_token_secret(tmp_path: Path, redis_url: str) -> None:
    """`rekindle serve` with a token secret under 32 bytes exits 2 (set-up error) and never prints it."""
    env = {**service_env(unique("p")), "REKINDLE_TOKEN_SECRET": "short-secret"}
    done = run_cli(
        "serve", "--port", str(free_port()), "--redis-url", redis_url, "--config", str(EXAMPLE_CONFIG),
        "--data-dir", str(tmp_path / "data"), env=env,
    )
    assert "REKINDLE_TOKEN_SECRET" in done.stderr
    assert done.returncode == 2, done.stderr
    assert "short-secret" not in done.stderr + done.stdout


def test_cluster_runs_a_local_cluster_until_stopped(tmp_path: Path) -> None:
    """`rekindle cluster` forms a three-primary cluster with a replica each, prints the URL that
    reaches it, serves keys by slot, and on SIGTERM stops every node and exits 0."""
    from redis.cluster import RedisCluster

    from realtime.cluster import free_ports

    port = free_ports(6, start=random.randrange(12_000, 20_000))[0]  # bus ports 10,000 above: below the ephemeral range
    with subprocess.Popen(
        [REKINDLE, "cluster", "--port", str(port), "--data-dir", str(tmp_path / "cluster")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        try:
            lines = [process.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
            assert lines[1].strip() == f"REDIS_URL=redis+cluster://127.0.0.1:{port}", (lines, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
            assert lines[0].count("primary") == 3 and lines[0].count("replica of") == 3, lines[0]
            with RedisCluster(host="127.0.0.1", port=port) as client:
                for i in range(30):
                    client.set(f"{{k{i}}}", i)
                assert sum(int(n.redis_connection.dbsize()) for n in client.get_primaries()) == 30
                assert len({client.get_node_from_key(f"{{k{i}}}").port for i in range(30)}) == 3
        finally:
            process.terminate()
            assert process.wait(timeout=60) == 0, process.stderr.read()  # type: ignore[union-attr]
    with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1) as stopped:
        with pytest.raises(redis.ConnectionError):
            stopped.ping()


def test_the_banner_names_the_active_programme_and_says_when_the_file_was_not_applied(tmp_path: Path, redis_url: str) -> None:
    """After POST /v1/config, a restart from the same file names the posted programme and its
    program_version, says the file was not applied, and prints a command that, run as printed, applies it."""
    from tests.realtime.conftest import ADMIN_KEY

    prefix, data_dir = unique("p"), tmp_path / "data"
    first = start_service(redis_url, prefix, data_dir)
    try:
        assert first.stdout_text().splitlines()[0].endswith(
            f"programme 'Tea House member programme' (program_version 1, from {EXAMPLE_CONFIG})")
        assert "NOT APPLIED" not in first.stdout_text()
        bakery = EXAMPLE_CONFIG.read_bytes().replace(b'name = "Tea House member programme"', b'name = "Bakery"', 1)
        posted = first.client(ADMIN_KEY).post("/v1/config", content=bakery)
        assert posted.json()["program_version"] == 2, posted.text
    finally:
        first.stop()

    again = start_service(redis_url, prefix, data_dir)
    try:
        banner = again.stdout_text().splitlines()
        assert banner[0].endswith("programme 'Bakery' (program_version 2, posted to /v1/config)"), banner
        assert banner[1].strip().startswith(f"NOT APPLIED: {EXAMPLE_CONFIG} ('Tea House member programme')"), banner
        [command] = [line.strip() for line in banner if line.strip().startswith("curl ")]
        applied = subprocess.run(["bash", "-c", command], env={"ADMIN": ADMIN_KEY, "PATH": "/usr/bin:/bin"},
                                 capture_output=True, text=True, timeout=30)
        assert applied.returncode == 0 and json.loads(applied.stdout)["name"] == "Tea House member programme", applied
        assert again.client(ADMIN_KEY).get("/v1/config").json()["program_version"] == 3
    finally:
        again.stop()


@pytest.mark.parametrize(("variables", "dev_clock"), [((), False), (("DEV_CLOCK=1",), True), (("DEV_CLOCK=0",), False)])
def test_make_run_passes_the_dev_clock_when_asked(variables: tuple[str, ...], dev_clock: bool) -> None:
    """`make run DEV_CLOCK=1` starts serve with --dev-clock (as the README says); without it, or with 0, it does not."""
    done = subprocess.run(["make", "-n", "run", *variables], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [serve] = [line for line in done.stdout.splitlines() if "rekindle serve" in line]
    assert ("--dev-clock" in shlex.split(serve)) is dev_clock, serve
