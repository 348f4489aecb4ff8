"""Infrastructure settings: read once at start-up from flags and the environment.

Programmes (what events earn) are a different kind of configuration and live in TOML files;
nothing here says anything about XP or quests.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

DEV_SECRETS_FILE = "dev-secrets.json"


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: start the embedded Valkey in data_dir
    api_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()
    token_secret: str = field(default="", repr=False)
    data_dir: Path = Path(".data")
    config_path: Path = Path("config/member_day.toml")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    key_prefix: str = "rk"
    max_body_bytes: int = 2 * 1024 * 1024
    max_batch: int = 1000
    token_ttl_s: int = 24 * 3600
    gc_full_every_s: float = 3600.0  # the live node's scheduled full garbage collection (gcpacer)
    sweep_grace_s: float = 30.0  # how long a cross-slot step (a redemption) has before the scheduler may finish it
    test_crash: str = ""  # test-only: a crash point (engine.redemptions.CRASH_AFTER_RESERVE)
    scheduler_s: float = 1.0  # how often the scheduler looks for due jobs (points expiry, ...)
    dev_clock: bool = False  # a clock POST /v1/admin/clock moves (rehearsals, tests); one worker only
    # Admission control (realtime/admission.py), per process: the weight in flight (an event is 1)
    # past which awards get 429 (0: no limit), and the lower one past which reads and replays do.
    max_inflight: int = 64
    max_inflight_reads: int = 32
    # Every member write waits until this many replicas have it (WAIT), up to wait_timeout_ms,
    # else is answered 503 (the retry by id is safe): what a failover can lose, made visible.
    wait_replicas: int = 0
    wait_timeout_ms: int = 100
    dev_generated: tuple[str, ...] = ()  # which secrets were generated for development

    def __repr__(self) -> str:  # never print secrets, not even by accident in a log line
        return (
            f"Settings(redis_url={_redact_url(self.redis_url)!r}, api_keys=<{len(self.api_keys)}>, "
            f"admin_keys=<{len(self.admin_keys)}>, data_dir={str(self.data_dir)!r}, "
            f"config_path={str(self.config_path)!r}, host={self.host!r}, port={self.port}, workers={self.workers})"
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "Settings":
        env = dict(os.environ if env is None else env)
        base = cls(
            redis_url=env.get("REDIS_URL") or None,
            api_keys=_keys(env.get("REKINDLE_API_KEYS", "")),
            admin_keys=_keys(env.get("REKINDLE_ADMIN_KEYS", "")),
            token_secret=env.get("REKINDLE_TOKEN_SECRET", ""),
            data_dir=Path(env.get("REKINDLE_DATA_DIR", ".data")),
            config_path=Path(env.get("REKINDLE_CONFIG", "config/member_day.toml")),
            key_prefix=_prefix(env.get("REKINDLE_KEY_PREFIX", "rk")),
            gc_full_every_s=float(env.get("REKINDLE_GC_FULL_S", "3600")),
            sweep_grace_s=_seconds("REKINDLE_SWEEP_GRACE_S", env.get("REKINDLE_SWEEP_GRACE_S", "30"), least=0.0),
            test_crash=env.get("REKINDLE_TEST_CRASH", ""),
            scheduler_s=_seconds("REKINDLE_SCHEDULER_S", env.get("REKINDLE_SCHEDULER_S", "1"), least=0.01),
            dev_clock=_flag("REKINDLE_DEV_CLOCK", env.get("REKINDLE_DEV_CLOCK", "")),
            **_inflight(env.get("REKINDLE_MAX_INFLIGHT", "64"), env.get("REKINDLE_MAX_INFLIGHT_READS", "")),
            wait_replicas=_count("REKINDLE_WAIT_REPLICAS", env.get("REKINDLE_WAIT_REPLICAS", "0"), least=0),
            wait_timeout_ms=_count("REKINDLE_WAIT_TIMEOUT_MS", env.get("REKINDLE_WAIT_TIMEOUT_MS", "100"), least=1),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def with_dev_secrets(self) -> "Settings":
        """Fill missing keys and secret with development values kept in the data folder.

        They persist across restarts so a developer's shell variables keep working; they are
        printed once by ``rekindle serve`` and never logged.
        """
        missing = [n for n, v in (("api_key", self.api_keys), ("admin_key", self.admin_keys), ("token_secret", self.token_secret)) if not v]
        if not missing:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / DEV_SECRETS_FILE
        stored: dict[str, str] = orjson.loads(path.read_bytes()) if path.exists() else {}
        for name in missing:
            stored.setdefault(name, ("rk_dev_" if name != "token_secret" else "") + secrets.token_urlsafe(32))
        # Created owner-only from the first byte (no window where another user could read it).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(stored, option=orjson.OPT_INDENT_2))
        return replace(
            self,
            api_keys=self.api_keys or frozenset({stored["api_key"]}),
            admin_keys=self.admin_keys or frozenset({stored["admin_key"]}),
            token_secret=self.token_secret or stored["token_secret"],
            dev_generated=tuple(missing),
        )

    def worker_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` rebuild these settings in a worker process."""
        return {
            "REDIS_URL": self.redis_url or "",
            "REKINDLE_API_KEYS": ",".join(sorted(self.api_keys)),
            "REKINDLE_ADMIN_KEYS": ",".join(sorted(self.admin_keys)),
            "REKINDLE_TOKEN_SECRET": self.token_secret,
            "REKINDLE_DATA_DIR": str(self.data_dir),
            "REKINDLE_CONFIG": str(self.config_path),
            "REKINDLE_KEY_PREFIX": self.key_prefix,
            "REKINDLE_GC_FULL_S": str(self.gc_full_every_s),
            "REKINDLE_SWEEP_GRACE_S": str(self.sweep_grace_s),
            "REKINDLE_TEST_CRASH": self.test_crash,
            "REKINDLE_SCHEDULER_S": str(self.scheduler_s),
            "REKINDLE_DEV_CLOCK": "1" if self.dev_clock else "0",
            "REKINDLE_MAX_INFLIGHT": str(self.max_inflight),
            "REKINDLE_MAX_INFLIGHT_READS": str(self.max_inflight_reads),
            "REKINDLE_WAIT_REPLICAS": str(self.wait_replicas),
            "REKINDLE_WAIT_TIMEOUT_MS": str(self.wait_timeout_ms),
        }


def _prefix(value: str) -> str:
    """A key prefix may not steer hash slots (no braces) or hide in whitespace."""
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,32}", value):
        raise ValueError("REKINDLE_KEY_PREFIX must be 1-32 of letters, digits and . _ : -")
    return value


def _count(name: str, value: str, least: int) -> int:
    if not value.strip().isdigit() or int(value) < least:
        raise ValueError(f"{name} must be a whole number, at least {least}")
    return int(value)


def _seconds(name: str, value: str, least: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= least or seconds == float("inf"):
        raise ValueError(f"{name} must be a number of seconds, at least {least:g}")
    return seconds


def _inflight(awards: str, reads: str) -> dict[str, int]:
    """REKINDLE_MAX_INFLIGHT (0: off) and REKINDLE_MAX_INFLIGHT_READS (1 to it; default half)."""
    if not awards.strip().isdigit():
        raise ValueError("REKINDLE_MAX_INFLIGHT must be a whole number of events, 0 for no limit")
    most = int(awards)
    if not reads.strip():
        return {"max_inflight": most, "max_inflight_reads": max(1, most // 2) if most else 0}
    if not reads.strip().isdigit() or (most and not 1 <= int(reads) <= most):
        raise ValueError(f"REKINDLE_MAX_INFLIGHT_READS must be a whole number from 1 to REKINDLE_MAX_INFLIGHT ({most})")
    return {"max_inflight": most, "max_inflight_reads": int(reads) if most else 0}


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in ("", "0", "false", "no"):
        return False
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    raise ValueError(f"{name} must be 1 or 0")


def _keys(value: str) -> frozenset[str]:
    return frozenset(k.strip() for k in value.split(",") if k.strip())


def _redact_url(url: str | None) -> str | None:
    if url is None or "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
