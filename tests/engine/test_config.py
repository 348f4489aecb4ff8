"""Programme validation: every mistake is named with its file, key path and reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest

from engine.config import compile_program, json_schema, load_program, parse_program
from engine.errors import ConfigError, ConfigProblem

FILE = "config/member_day.toml"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_text(example_config_path: Path) -> str:
    return example_config_path.read_text()


def mutate(text: str, *edits: tuple[str, str]) -> str:
    """Apply exact replacements, each of which must match exactly once (so no edit is a no-op)."""
    for old, new in edits:
        assert text.count(old) == 1, f"edit target not unique in the example: {old!r}"
        text = text.replace(old, new)
    return text


def problems_of(text: str, file: str = FILE) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_program(text, file)
    assert info.value.problems, "a ConfigError must list its problems"
    return info.value.problems


def paths_of(text: str) -> set[str]:
    problems = problems_of(text)
    for p in problems:
        assert p.file == FILE
        assert p.reason.strip()
    return {p.path for p in problems}


def test_example_programme_validates_and_compiles(example_config_path: Path) -> None:
    """config/member_day.toml validates, compiles and has the tables the hot path reads."""
    program = load_program(example_config_path)
    assert program.name == "Tea House member programme"
    assert str(program.tz) == "Asia/Shanghai"
    assert program.retention_ms == 14 * 86_400_000
    assert program.skew_ms == 300_000
    assert program.feed_length == 500
    assert [t.id for t in program.tiers] == ["bronze", "silver", "gold", "platinum", "diamond"]
    assert [r.id for r in program.rules_by_event["purchase"]] == ["purchase_xp", "purchase_points"]
    assert [q.id for q in program.quests_by_event["purchase"]] == [
        "first_order",
        "weekly_spend",
        "double_twelve_big_orders",
    ]
    assert program.rules_by_event["login"][0].daily_cap == 1
    window = program.quests_by_event["purchase"][2]
    assert window.starts_ms == 1_797_004_800_000  # 2026-12-12T00:00:00+08:00
    assert window.ends_ms == 1_797_004_800_000 + 86_400_000
    assert window.where == (("amount", "gte", 10_000),)


def test_version_is_the_source_hash(example_config_path: Path) -> None:
    """The compiled version is the first 16 hex digits of the source's sha256."""
    source = example_config_path.read_bytes()
    program = load_program(example_config_path)
    assert program.program_hash == hashlib.sha256(source).hexdigest()[:16]
    assert compile_program(parse_program(source, "x"), source + b"\n").program_hash != program.program_hash


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("timezone = \"Asia/Shanghai\"", "timezon = \"Asia/Shanghai\""), "program.timezon"),
        (("{ type = \"int\", min = 1, max = 100_000_000", "{ type = \"int\", mn = 1, max = 100_000_000"),
         "events.purchase.fields.amount.mn"),
        (("daily_cap = 5_000", "daly_cap = 5_000"), "rules.purchase_points.daly_cap"),
        (("fixed = 1\ndaily_cap = 1", "fixed = 1\ndaly_cap = 1"), "rules.login_xp.daly_cap"),
        (("fixed = 5\ndaily_cap = 5", "fixed = 5\ndaly_cap = 5"), "rules.checkin_xp.daly_cap"),
        (("every = 100, amount = 1 }      # 1 XP", "every = 100, amount = 1, unit = 1 }      # 1 XP"),
         "rules.purchase_xp.per.unit"),
        (("where.has_photo.eq = true\ndaily_cap = 90", "where.has_photo.equals = true\ndaily_cap = 90"),
         "rules.photo_review_bonus.where.has_photo.equals"),
        (("points_multiplier = 1.1\n", "points_multiplier = 1.1\nbonus = 3\n"), "tiers[1].bonus"),
        (("rewards = { points = 200,", "rewards = { point = 200,"), "tiers[1].rewards.point"),
        (("title = \"Place your first order\"\n", "title = \"Place your first order\"\nrepeat = true\n"),
         "quests.first_order.repeat"),
        (("min_spend_cents = 9_900", "min_spend_cent = 9_900"), "catalog.silver-welcome.min_spend_cent"),
        (("[catalog.free-shipping]\n", "[catalog.free-shipping]\nkinds = \"coupon\"\n"), "catalog.free-shipping.kinds"),
        (("# --- quests", "[rulez.x]\nevent = \"login\"\n\n# --- quests"), "rulez"),
    ],
)
def test_unknown_key_is_named_with_its_path(example_text: str, edit: tuple[str, str], path: str) -> None:
    """A misspelt key anywhere is refused with its exact key path, never ignored."""
    problems = problems_of(mutate(example_text, edit))
    assert [(p.file, p.path) for p in problems] == [(FILE, path)]
    assert problems[0].reason.startswith("unknown key")


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("xp = 1_000\n", "xp = \"lots\"\n"), "tiers[1].xp"),
        (("daily_cap = 5_000", "daily_cap = \"lots\""), "rules.purchase_points.daily_cap"),
        (("feed_length = 500", "feed_length = [500]"), "program.feed_length"),
        (("dedupe_retention_days = 14", "dedupe_retention_days = 3"), "program.dedupe_retention_days"),
        (("target = 30_000", "target = 30.5"), "quests.weekly_spend.target"),
        (("fields.stars = { type = \"int\"", "fields.stars = { type = \"float\""), "events.review.fields.stars.type"),
        (("grant = \"xp\"\nfixed = 2", "grant = \"gems\"\nfixed = 2"), "rules.share_xp.grant"),
        (("kind = \"weekly\"\nevent = \"review\"", "kind = \"monthly\"\nevent = \"review\""), "quests.weekly_reviews.kind"),
        (("value_cents = 8_000", "value_cents = -1"), "catalog.platinum-welcome.value_cents"),
        (("where.amount.gte = 10_000", "where.amount.gte = \"lots\""), "quests.double_twelve_big_orders.where.amount.gte"),
        (("coupons = [\"weekly-10\"]", "coupons = \"weekly-10\""), "quests.weekly_spend.rewards.coupons"),
        (("where.has_photo.eq = true\ndaily_cap = 90", "where.has_photo.eq = [1]\ndaily_cap = 90"),
         "rules.photo_review_bonus.where.has_photo.eq"),
        (("where.amount.gte = 10_000", "where.amount.in = [[10_000]]"), "quests.double_twelve_big_orders.where.amount.in[0]"),
        (("one_of = [\"app\", \"web\", \"store\"]", "one_of = [\"app\", 3]"), "events.purchase.fields.channel.one_of[1]"),
        # TOML is typed: a quoted number or a boolean is not an int, as the JSON Schema says too
        (("fixed = 300", "fixed = true"), "rules.invite_points.fixed"),
        (("daily_cap = 5_000", "daily_cap = \"5000\""), "rules.purchase_points.daily_cap"),
        (("fields.sku = { type = \"str\", max_length = 64, required = false }",
          "fields.sku = { type = \"str\", max_length = 64, required = \"no\" }"), "events.purchase.fields.sku.required"),
        (("[rules.share_xp]", "[rules.\"share xp\"]"), "rules.share xp"),
    ],
)
def test_wrong_type_or_range_is_named_with_its_path(example_text: str, edit: tuple[str, str], path: str) -> None:
    """A value of the wrong type or out of range is refused at its exact key path."""
    assert paths_of(mutate(example_text, edit)) == {path}


@pytest.mark.parametrize(
    ("edit", "path", "reason_part"),
    [
        (("event = \"login\"\ngrant = \"xp\"", "event = \"logon\"\ngrant = \"xp\""), "rules.login_xp.event",
         "no event type 'logon'"),
        (("event = \"invite\"\ntarget = 3", "event = \"invited\"\ntarget = 3"), "quests.invite_friends.event",
         "no event type 'invited'"),
        (("where.has_photo.eq = true\ndaily_cap = 90", "where.photo.eq = true\ndaily_cap = 90"),
         "rules.photo_review_bonus.where.photo", "has no field 'photo'"),
        (("every = 100, amount = 1 }      # 1 XP per ¥1\n", "every = 100, amount = 1 }      # 1 XP per ¥1\nwhere.sku.gt = 5\n"),
         "rules.purchase_xp.where.sku", "need an int field"),
        (("where.has_photo.eq = true\ndaily_cap = 90", "where.has_photo.eq = \"yes\"\ndaily_cap = 90"),
         "rules.photo_review_bonus.where.has_photo.eq", "not a bool"),
        (("where.amount.gte = 10_000", "where.amount.in = [\"big\"]"),
         "quests.double_twelve_big_orders.where.amount.in", "not a int"),
        (("sum = \"amount\"", "sum = \"sku\""), "quests.weekly_spend.sum", "only int fields"),
        (("sum = \"amount\"", "sum = \"total\""), "quests.weekly_spend.sum", "has no field 'total'"),
        (("{ field = \"amount\", every = 100, amount = 1 }      # 1 point",
          "{ field = \"sku\", every = 100, amount = 1 }      # 1 point"), "rules.purchase_points.per.field", "only int"),
        (("coupons = [\"free-shipping\"] }", "coupons = [\"free-shiping\"] }"), "quests.first_order.rewards.coupons[0]",
         "no catalog item 'free-shiping'"),
        (("coupons = [\"gold-welcome\", \"free-shipping\"]", "coupons = [\"gold-welcome\", \"free-shipment\"]"),
         "tiers[2].rewards.coupons[1]", "no catalog item"),
        (("xp = 5_000", "xp = 500"), "tiers[2].xp", "greater than the tier before it (1000)"),
        (("xp = 20_000", "xp = 5_000"), "tiers[3].xp", "greater than the tier before it (5000)"),
        (("xp = 0\n", "xp = 10\n"), "tiers[0].xp", "must be 0"),
        (("id = \"gold\"", "id = \"silver\""), "tiers[2].id", "declared twice"),
        (("starts = 2026-12-12T00:00:00+08:00\n", ""), "quests.double_twelve_big_orders", "needs both"),
        (("ends = 2026-12-13T00:00:00+08:00", "ends = 2026-12-11T00:00:00+08:00"),
         "quests.double_twelve_big_orders.ends", "after starts"),
        (("ends = 2026-12-13T00:00:00+08:00", "ends = 2026-12-12T00:00:00+08:00"),
         "quests.double_twelve_big_orders.ends", "after starts"),
        (("starts = 2026-12-12T00:00:00+08:00", "starts = 2026-12-12T00:00:00"),
         "quests.double_twelve_big_orders.starts", "UTC offset"),
        (("timezone = \"Asia/Shanghai\"", "timezone = \"Asia/Shangai\""), "program.timezone", "unknown time zone"),
        (("points_multiplier = 1.25", "points_multiplier = 1.2505"), "tiers[2].points_multiplier", "three decimals"),
        (("per = { field = \"amount\", every = 100, amount = 1 }      # 1 XP",
          "fixed = 3\nper = { field = \"amount\", every = 100, amount = 1 }      # 1 XP"), "rules.purchase_xp", "exactly one"),
        (("fixed = 1\ndaily_cap = 1", "daily_cap = 1"), "rules.login_xp", "exactly one"),
        (("fields.stars = { type = \"int\", min = 1, max = 5 }", "fields.stars = { type = \"int\", min = 6, max = 5 }"),
         "events.review.fields.stars.min", "greater than max"),
        (("fields.invitee = { type = \"str\", max_length = 64 }", "fields.invitee = { type = \"str\", min = 1 }"),
         "events.invite.fields.invitee", "int fields only"),
        (("fields.has_photo = { type = \"bool\", required = false }",
          "fields.has_photo = { type = \"bool\", required = false, one_of = [\"y\"] }"),
         "events.review.fields.has_photo.one_of", "str fields only"),
    ],
)
def test_whole_file_mistake_is_named_with_its_path(
    example_text: str, edit: tuple[str, str], path: str, reason_part: str
) -> None:
    """A mistake that needs the whole file to see is named with its key path and why."""
    problems = problems_of(mutate(example_text, edit))
    assert [(p.file, p.path) for p in problems] == [(FILE, path)]
    assert reason_part in problems[0].reason


def test_three_decimals_is_the_multiplier_limit(example_text: str) -> None:
    """points_multiplier takes thousandths: 1.125 is fine and compiles to 1125."""
    text = mutate(example_text, ("points_multiplier = 1.25", "points_multiplier = 1.125"))
    source = text.encode()
    program = compile_program(parse_program(source, FILE), source)
    assert msgpack.unpackb(program.tiers_packed)[2][2] == 1125


def test_misspelt_required_key_is_both_unknown_and_missing(example_text: str) -> None:
    """A misspelt required key names the unknown spelling and the missing key."""
    problems = problems_of(mutate(example_text, ("every = 100, amount = 1 }      # 1 XP", "evry = 100, amount = 1 }      # 1 XP")))
    reasons = {p.path: p.reason for p in problems}
    assert set(reasons) == {"rules.purchase_xp.per.evry", "rules.purchase_xp.per.every"}
    assert reasons["rules.purchase_xp.per.evry"].startswith("unknown key")
    assert reasons["rules.purchase_xp.per.every"] == "required key is missing"


def test_invalid_toml_names_the_file(example_text: str) -> None:
    """Text that is not TOML is one problem naming the file, at the top of it."""
    problems = problems_of(mutate(example_text, ("name = \"Tea House member programme\"", "name = \"Tea House")))
    assert len(problems) == 1
    assert (problems[0].file, problems[0].path) == (FILE, "")
    assert "line 11" in problems[0].reason
    assert str(problems[0]).startswith(f"{FILE}: <top>: ")


def test_every_shape_mistake_is_reported(example_text: str) -> None:
    """Several shape mistakes in one file are all reported, not just the first."""
    text = mutate(
        example_text,
        ("daily_cap = 5_000", "daly_cap = 5_000"),
        ("xp = 1_000\n", "xp = \"lots\"\n"),
        ("timezone = \"Asia/Shanghai\"", "timezone = \"Mars/Olympus\""),
        ("value_cents = 8_000", "value_cents = -1"),
    )
    assert paths_of(text) == {
        "rules.purchase_points.daly_cap",
        "tiers[1].xp",
        "program.timezone",
        "catalog.platinum-welcome.value_cents",
    }


def test_every_whole_file_mistake_is_reported(example_text: str) -> None:
    """Several cross-reference mistakes in one file are all reported, each at its path."""
    text = mutate(
        example_text,
        ("event = \"share\"\ngrant = \"xp\"", "event = \"shares\"\ngrant = \"xp\""),
        ("xp = 5_000", "xp = 500"),
        ("coupons = [\"free-shipping\"] }", "coupons = [\"free-shiping\"] }"),
        ("sum = \"amount\"", "sum = \"sku\""),
        ("ends = 2026-12-13T00:00:00+08:00", "ends = 2026-12-11T00:00:00+08:00"),
    )
    assert paths_of(text) == {
        "rules.share_xp.event",
        "tiers[2].xp",
        "quests.first_order.rewards.coupons[0]",
        "quests.weekly_spend.sum",
        "quests.double_twelve_big_orders.ends",
    }


def test_shape_and_whole_file_mistakes_are_reported_together(example_text: str) -> None:
    """A typo does not hide the cross-reference mistakes elsewhere in the same file."""
    text = mutate(
        example_text,
        ("daily_cap = 5_000", "daly_cap = 5_000"),
        ("coupons = [\"free-shipping\"] }", "coupons = [\"free-shiping\"] }"),
    )
    assert paths_of(text) == {"rules.purchase_points.daly_cap", "quests.first_order.rewards.coupons[0]"}


def test_load_program_names_the_file_it_read(tmp_path: Path, example_text: str) -> None:
    """load_program reports problems against the path it was given."""
    path = tmp_path / "broken.toml"
    path.write_text(mutate(example_text, ("daily_cap = 5_000", "daly_cap = 5_000")))
    with pytest.raises(ConfigError) as info:
        load_program(path)
    assert [(p.file, p.path) for p in info.value.problems] == [(str(path), "rules.purchase_points.daly_cap")]
    assert info.value.problems[0].as_dict()["file"] == str(path)


def test_load_program_of_a_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming it, not an OSError."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_program(path)
    assert [(p.file, p.path) for p in info.value.problems] == [(str(path), "")]


def test_json_schema_is_a_dict_describing_the_programme() -> None:
    """json_schema() is a JSON Schema dict whose top-level keys are the programme's sections."""
    schema = json_schema()
    assert isinstance(schema, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "rekindle programme"
    assert set(schema["properties"]) == {"program", "events", "rules", "tiers", "quests", "catalog"}
    assert schema["additionalProperties"] is False


def test_committed_schema_matches_the_models() -> None:
    """config/program.schema.json equals a freshly generated schema (run `make schema` after a model change)."""
    committed = json.loads((ROOT / "config" / "program.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))
