"""Games tests use the engine's fixtures: the real award path on the session's server."""

from tests.engine.conftest import compile_toml, engine, noon_ms, open_engine, program  # noqa: F401
