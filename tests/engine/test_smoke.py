"""The example programme loads: the file a shop starts from is always valid."""

from engine.config import load_program


def test_example_programme_is_valid(example_config_path):
    """config/member_day.toml validates and compiles."""
    program = load_program(example_config_path)
    assert program.name
    assert "purchase" in program.events
