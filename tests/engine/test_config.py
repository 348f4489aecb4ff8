"""Programme validation: every mistake is named with its file, key path and reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest

from engine import config
from engine.config import Quest, compile_program, json_schema, load_program, parse_program
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
        "care.holiday.day-520",  # [care.holidays]: daily quests that run on their days only
        "care.holiday.spring-festival",
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
        (("points_multiplier = 1.1\n", "points_multiplier = 1.1\nbonus = 3\n"), "tiers[silver].bonus"),
        (("rewards = { points = 200,", "rewards = { point = 200,"), "tiers[silver].rewards.point"),
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
        (("xp = 1_000\n", "xp = \"lots\"\n"), "tiers[silver].xp"),
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
         "tiers[gold].rewards.coupons[1]", "no catalog item"),
        (("xp = 5_000", "xp = 500"), "tiers[gold].xp", "greater than the tier before it (1000)"),
        (("xp = 20_000", "xp = 5_000"), "tiers[platinum].xp", "greater than the tier before it (5000)"),
        (("xp = 0\n", "xp = 10\n"), "tiers[bronze].xp", "must be 0"),
        (("id = \"gold\"", "id = \"silver\""), "tiers[2].id", "declared twice"),
        (("starts = 2026-12-12T00:00:00+08:00\n", ""), "quests.double_twelve_big_orders", "needs both"),
        (("ends = 2026-12-13T00:00:00+08:00", "ends = 2026-12-11T00:00:00+08:00"),
         "quests.double_twelve_big_orders.ends", "after starts"),
        (("ends = 2026-12-13T00:00:00+08:00", "ends = 2026-12-12T00:00:00+08:00"),
         "quests.double_twelve_big_orders.ends", "after starts"),
        (("starts = 2026-12-12T00:00:00+08:00", "starts = 2026-12-12T00:00:00"),
         "quests.double_twelve_big_orders.starts", "UTC offset"),
        (("timezone = \"Asia/Shanghai\"", "timezone = \"Asia/Shangai\""), "program.timezone", "unknown time zone"),
        (("points_multiplier = 1.25", "points_multiplier = 1.2505"), "tiers[gold].points_multiplier", "three decimals"),
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
    assert msgpack.unpackb(program.tiers_packed)[3 * 2 + 2] == 1125  # flat: id, xp, multiplier a tier


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
    assert problems[0].reason.startswith("not valid TOML at line 11, column ")
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
        "tiers[silver].xp",
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
        "tiers[gold].xp",
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
    assert set(schema["properties"]) == {"program", "events", "rules", "tiers", "tier_policy", "quests", "catalog", "points", "care", "member_days",
                                         "webhooks", "games"}
    # Each installed game's section is described under games, for editors to complete and check.
    assert schema["properties"]["games"]["properties"]["checkin"]["title"] == "Checkin"
    assert schema["properties"]["games"]["additionalProperties"] is False
    assert schema["additionalProperties"] is False


def test_committed_schema_matches_the_models() -> None:
    """config/program.schema.json equals a freshly generated schema (run `make schema` after a model change)."""
    committed = json.loads((ROOT / "config" / "program.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))


# --- limits, nesting, zones, dead conditions, plain words, key paths (issue 10) -----------------

MINIMAL = """\
[program]
name = "p"

[events.buy]
fields.amount = { type = "int", min = 1, max = 1000 }
fields.channel = { type = "str", one_of = ["till", "app", "collect"] }

[[tiers]]
id = "t0"
name = "T0"
xp = 0
"""


def _many(template: str, count: int) -> str:
    return "\n".join(template.format(i=i) for i in range(count))


def _values(count: int, quoted: bool = False) -> str:
    return ", ".join(f'"v{i}"' if quoted else str(i + 1) for i in range(count))


@pytest.mark.parametrize(
    ("extra", "path", "limit", "noun"),
    [
        (_many('[[tiers]]\nid = "t{i}x"\nname = "T"\nxp = 1{i}', config.MAX_TIERS), "tiers", config.MAX_TIERS, "tiers"),
        (_many("[events.e{i}]", config.MAX_EVENT_TYPES), "events", config.MAX_EVENT_TYPES, "event types"),
        ("[events.wide]\n" + _many('fields.f{i} = {{ type = "int" }}', config.MAX_FIELDS + 1),
         "events.wide.fields", config.MAX_FIELDS, "fields"),
        (_many('[rules.r{i}]\nevent = "buy"\ngrant = "xp"\nfixed = 1', config.MAX_RULES + 1),
         "rules", config.MAX_RULES, "rules"),
        (_many('[quests.q{i}]\ntitle = "q"\nkind = "once"\nevent = "buy"\ntarget = 1', config.MAX_QUESTS + 1),
         "quests", config.MAX_QUESTS, "quests"),
        (_many('[catalog.c{i}]\ntitle = "c"\nvalue_cents = 1', config.MAX_CATALOG_ITEMS + 1),
         "catalog", config.MAX_CATALOG_ITEMS, "catalog items"),
        ('[quests.q]\ntitle = "q"\nkind = "once"\nevent = "buy"\ntarget = 1\n'
         f"rewards = {{ coupons = [{_values(config.MAX_COUPONS_PER_REWARD + 1, quoted=True)}] }}",
         "quests.q.rewards.coupons", config.MAX_COUPONS_PER_REWARD, "coupons"),
        ('[rules.r]\nevent = "buy"\ngrant = "xp"\nfixed = 1\n' + _many("where.f{i}.eq = 1", config.MAX_CONDITIONS + 1),
         "rules.r.where", config.MAX_CONDITIONS, "conditions"),
        (f'[rules.r]\nevent = "buy"\ngrant = "xp"\nfixed = 1\nwhere.amount.in = [{_values(config.MAX_VALUES + 1)}]',
         "rules.r.where.amount.in", config.MAX_VALUES, "values"),
        (f'[events.e]\nfields.c = {{ type = "str", one_of = [{_values(config.MAX_VALUES + 1, quoted=True)}] }}',
         "events.e.fields.c.one_of", config.MAX_VALUES, "values"),
    ],
    ids=["tiers", "event_types", "fields", "rules", "quests", "catalog", "coupons", "where", "in", "one_of"],
)
def test_limits_are_refused_and_named(extra: str, path: str, limit: int, noun: str) -> None:
    """A programme past a documented limit is refused at the section's path, naming the limit."""
    problems = problems_of(MINIMAL + "\n" + extra + "\n")
    assert [p.path for p in problems] == [path]
    assert f"at most {limit:,} {noun}" in problems[0].reason


def test_limits_hold_at_the_limit() -> None:
    """Exactly at each limit a programme still validates (the limits are inclusive)."""
    text = MINIMAL + "\n".join(
        [
            _many('[[tiers]]\nid = "t{i}x"\nname = "T"\nxp = 1{i}', config.MAX_TIERS - 1),
            _many("[events.e{i}]", config.MAX_RULES // config.MAX_RULES_PER_EVENT + 1),
            "\n".join(  # as many rules as allowed, each event type named by as many as allowed
                f'[rules.r{i}]\nevent = "e{i // config.MAX_RULES_PER_EVENT}"\ngrant = "xp"\nfixed = 1'
                for i in range(config.MAX_RULES - 1)
            ),
            f'[rules.wide]\nevent = "buy"\ngrant = "xp"\nfixed = 1\nwhere.amount.in = [{_values(config.MAX_VALUES)}]',
        ]
    )
    program = parse_program(text, FILE)
    assert len(program.tiers) == config.MAX_TIERS


@pytest.mark.parametrize(
    ("template", "section", "limit", "verb"),
    [
        ('[rules.r{i}]\nevent = "buy"\ngrant = "xp"\nfixed = 1', "rules", config.MAX_RULES_PER_EVENT, "name"),
        ('[quests.q{i}]\ntitle = "q"\nkind = "daily"\nevent = "buy"\ntarget = 9', "quests", config.MAX_QUESTS_PER_EVENT, "count"),
    ],
    ids=["rules", "quests"],
)
def test_one_event_type_moves_a_bounded_number_of_rules_and_quests(template: str, section: str, limit: int, verb: str) -> None:
    """One award runs every rule and quest of its event type: past the per-event limit, the first
    one over is named; exactly at it, the programme validates."""
    assert parse_program(MINIMAL + _many(template, limit), FILE)
    problems = problems_of(MINIMAL + _many(template, limit + 1))
    assert [p.path for p in problems] == [f"{section}.{section[0]}{limit}.event"]
    assert f"at most {limit} {section} may {verb} one event type" in problems[0].reason


def test_a_huge_tier_table_is_one_problem() -> None:
    """18,000 tiers (the 858 KB programme of the issue) is one problem naming the tier limit."""
    tiers = _many('[[tiers]]\nid = "t{i}x"\nname = "T"\nxp = 1{i}', 18_000)
    problems = problems_of(MINIMAL + tiers)
    assert [(p.path, p.reason) for p in problems] == [
        ("tiers", f"at most {config.MAX_TIERS} tiers are allowed (this has 18,001)")
    ]


@pytest.mark.parametrize("depth", [20_000, 300, config.MAX_NESTING + 1])
def test_deep_nesting_is_a_problem_not_a_crash(depth: int) -> None:
    """A deeply nested array is a ConfigProblem saying so, never a RecursionError."""
    problems = problems_of(MINIMAL + "x = " + "[" * depth + "]" * depth + "\n")
    assert len(problems) == 1
    assert "nested too deeply" in problems[0].reason


def test_deep_nesting_inside_a_known_key_is_named_there(example_text: str) -> None:
    """Nesting past the limit under a real key names that key's path."""
    deep = "[" * 40 + "1" + "]" * 40
    problems = problems_of(mutate(example_text, ("where.amount.gte = 10_000", f"where.amount.in = {deep}")))
    assert [p.path for p in problems] == ["quests.double_twelve_big_orders.where.amount.in"]
    assert "nested too deeply" in problems[0].reason


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+8"])
def test_region_zones_are_accepted(example_text: str, zone: str) -> None:
    """UTC and IANA region zones are accepted."""
    program = parse_program(mutate(example_text, ('timezone = "Asia/Shanghai"', f'timezone = "{zone}"')), FILE)
    assert program.program.timezone == zone


@pytest.mark.parametrize(
    "zone", ["localtime", "posixrules", "Factory", "../etc/x", "/etc/localtime", "GMT", "PRC", "posix/Asia/Shanghai", ""]
)
def test_host_dependent_or_alias_zones_are_refused(example_text: str, zone: str) -> None:
    """Zones whose meaning depends on the host (localtime, posixrules, Factory) or are not region names are refused."""
    problems = problems_of(mutate(example_text, ('timezone = "Asia/Shanghai"', f'timezone = "{zone}"')))
    assert [p.path for p in problems] == ["program.timezone"]
    assert "UTC" in problems[0].reason and "Europe/Berlin" in problems[0].reason


PURCHASE_XP = ("every = 100, amount = 1 }      # 1 XP per ¥1\n",)
REVIEW_POINTS = "fixed = 20\n"


@pytest.mark.parametrize(
    ("anchor", "where", "path", "reason_part"),
    [
        (PURCHASE_XP[0], 'where.channel.eq = "shop"', "rules.purchase_xp.where.channel.eq", "'shop' is not one of"),
        (PURCHASE_XP[0], 'where.channel.ne = "shop"', "rules.purchase_xp.where.channel.ne", "'shop' is not one of"),
        (PURCHASE_XP[0], 'where.channel.in = ["app", "shop"]', "rules.purchase_xp.where.channel.in", "'shop' is not one of"),
        (PURCHASE_XP[0], 'where.channel.not_in = ["shop"]', "rules.purchase_xp.where.channel.not_in", "'shop'"),
        (REVIEW_POINTS, "where.stars.eq = 6", "rules.review_points.where.stars.eq", "outside 1..5"),
        (REVIEW_POINTS, "where.stars.in = [0, 3]", "rules.review_points.where.stars.in", "0 is outside 1..5"),
        (REVIEW_POINTS, "where.stars.ne = 9", "rules.review_points.where.stars.ne", "outside 1..5"),
        (REVIEW_POINTS, "where.stars.gt = 5", "rules.review_points.where.stars.gt", "can never hold"),
        (REVIEW_POINTS, "where.stars.gte = 6", "rules.review_points.where.stars.gte", "can never hold"),
        (REVIEW_POINTS, "where.stars.lt = 1", "rules.review_points.where.stars.lt", "can never hold"),
        (REVIEW_POINTS, "where.stars.lte = 0", "rules.review_points.where.stars.lte", "can never hold"),
        (REVIEW_POINTS, "where.stars = { gte = 4, lt = 3 }", "rules.review_points.where.stars", "can never hold"),
    ],
)
def test_a_condition_that_cannot_matter_is_refused(
    example_text: str, anchor: str, where: str, path: str, reason_part: str
) -> None:
    """A where test on a value the field can never take is refused: the rule would never (or always) fire."""
    problems = problems_of(mutate(example_text, (anchor, f"{anchor}{where}\n")))
    assert [p.path for p in problems] == [path]
    assert reason_part in problems[0].reason


@pytest.mark.parametrize(
    ("anchor", "where"),
    [
        (PURCHASE_XP[0], 'where.channel.in = ["app", "store"]'),
        (PURCHASE_XP[0], 'where.channel.ne = "web"'),
        (REVIEW_POINTS, "where.stars.gte = 5"),
        (REVIEW_POINTS, "where.stars.gt = 4"),
        (REVIEW_POINTS, "where.stars.lte = 1"),
        (REVIEW_POINTS, "where.stars = { gte = 2, lte = 2 }"),
        (REVIEW_POINTS, "where.stars.in = [1, 5]"),
    ],
)
def test_a_condition_that_can_hold_is_accepted(example_text: str, anchor: str, where: str) -> None:
    """Tests inside the field's values or range still validate."""
    parse_program(mutate(example_text, (anchor, f"{anchor}{where}\n")), FILE)


def test_starts_and_ends_on_a_weekly_quest_are_kept_and_documented(example_text: str) -> None:
    """starts/ends on a daily or weekly quest bound when it runs; the field description says so."""
    text = mutate(example_text, ('kind = "weekly"\nevent = "review"',
                                 'kind = "weekly"\nevent = "review"\nstarts = 2026-01-05T00:00:00+08:00'))
    source = text.encode()
    program = compile_program(parse_program(source, FILE), source)
    quest = next(q for q in program.quests if q.id == "weekly_reviews")
    assert quest.starts_ms == 1_767_542_400_000 and quest.ends_ms is None
    for key in ("starts", "ends"):
        description = Quest.model_fields[key].description or ""
        assert "daily" in description and "weekly" in description


PYDANTIC_WORDS = ("Input should", "String should", "instance of", "should have", "valid dictionary", "^[")


@pytest.mark.parametrize(
    ("edit", "path", "reason"),
    [
        (("where.amount.gte = 10_000", "where.amount = 5"), "quests.double_twelve_big_orders.where.amount",
         "must be a table of tests such as { gte = 100 }"),
        (("[rules.share_xp]", "[rules.\"share xp\"]"), "rules.share xp",
         "names use letters, digits, _ and - (at most 48), starting with a letter or digit"),
        (("event = \"share\"\ngrant", "event = \"sh are\"\ngrant"), "rules.share_xp.event",
         "names use letters, digits, _ and - (at most 48), starting with a letter or digit"),
        (("daily_cap = 5_000", "daily_cap = \"lots\""), "rules.purchase_points.daily_cap",
         "must be a whole number such as 100 (no quotes)"),
        (("target = 30_000", "target = 30.5"), "quests.weekly_spend.target", "must be a whole number such as 100 (no quotes)"),
        (("fields.sku = { type = \"str\", max_length = 64, required = false }",
          "fields.sku = { type = \"str\", max_length = 64, required = \"no\" }"), "events.purchase.fields.sku.required",
         "must be true or false (no quotes)"),
        (("name = \"Gold\"", "name = 5"), "tiers[gold].name", "must be text in quotes, such as \"gold\""),
        (("[events.login]\n", "[events.login]\nfields = 3\n"), "events.login.fields",
         "must be a table, such as [section] or { key = value }"),
        (("[events.login]\n", "[events.login]\nfields.x = 3\n"), "events.login.fields.x",
         "must be a table such as { type = \"int\" }"),
        (("coupons = [\"weekly-10\"]", "coupons = \"weekly-10\""), "quests.weekly_spend.rewards.coupons",
         "must be an array such as [\"a\", \"b\"]"),
        (("title = \"Check in today\"", "title = \"" + "x" * 121 + "\""), "quests.daily_checkin.title",
         "must be at most 120 characters long"),
        (("name = \"Tea House member programme\"", "name = \"\""), "program.name", "must not be empty"),
        (("dedupe_retention_days = 14", "dedupe_retention_days = 3"), "program.dedupe_retention_days", "must be at least 7"),
        (("points_multiplier = 1.25", "points_multiplier = 1000.0"), "tiers[gold].points_multiplier", "must be at most 100"),
        (("target = 30_000", "target = 0"), "quests.weekly_spend.target", "must be at least 1"),
        (("kind = \"weekly\"\nevent = \"review\"", "kind = \"monthly\"\nevent = \"review\""), "quests.weekly_reviews.kind",
         "must be one of \"once\", \"daily\", \"weekly\", \"window\""),
        (("grant = \"xp\"\nfixed = 2", "grant = \"gems\"\nfixed = 2"), "rules.share_xp.grant", "must be one of \"xp\", \"points\", \"item\""),
        (("[catalog.free-shipping]\n", "[catalog.free-shipping]\nkind = \"voucher\"\n"), "catalog.free-shipping.kind",
         "must be one of \"coupon\""),
        (("starts = 2026-12-12T00:00:00+08:00", "starts = \"soon\""), "quests.double_twelve_big_orders.starts",
         "must be a date and time with its UTC offset, such as 2026-12-12T00:00:00+08:00 (no quotes)"),
        (("starts = 2026-12-12T00:00:00+08:00", "starts = 12:00:00"), "quests.double_twelve_big_orders.starts",
         "must be a date and time with its UTC offset, such as 2026-12-12T00:00:00+08:00 (no quotes)"),
        (("where.has_photo.eq = true\ndaily_cap = 90", "where.has_photo.eq = [1]\ndaily_cap = 90"),
         "rules.photo_review_bonus.where.has_photo.eq", "must be a whole number, true or false, or text in quotes"),
        (("where.amount.gte = 10_000", "where.amount.in = [[10_000]]"), "quests.double_twelve_big_orders.where.amount.in[0]",
         "must be a whole number or text in quotes"),
        (("one_of = [\"app\", \"web\", \"store\"]", "one_of = []"), "events.purchase.fields.channel.one_of",
         "needs at least 1 value"),
        (("[program]\n", "program = 3\n[programme]\n"), "program", "must be a table, such as [section] or { key = value }"),
    ],
)
def test_errors_are_in_the_designers_words(example_text: str, edit: tuple[str, str], path: str, reason: str) -> None:
    """Each shape mistake is one problem in plain words, never pydantic's phrasing."""
    problems = [p for p in problems_of(mutate(example_text, edit)) if not p.path.startswith("programme")]
    assert [(p.path, p.reason) for p in problems] == [(path, reason)]
    assert not any(word in problems[0].reason for word in PYDANTIC_WORDS)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("id = \"gold\"", "id = \"silver\""), "tiers[2].id"),  # two tiers share the id: the index is unambiguous
        (("id = \"gold\"", "id = \"go ld\""), "tiers[2].id"),  # an invalid id
        (("id = \"gold\"\n", ""), "tiers[2].id"),  # a missing id
        (("id = \"gold\"", "id = 7"), "tiers[2].id"),  # an id that is not text
    ],
)
def test_tiers_fall_back_to_the_index_without_a_usable_id(example_text: str, edit: tuple[str, str], path: str) -> None:
    """A tier whose id is missing, invalid or shared is named by its index instead."""
    assert paths_of(mutate(example_text, edit)) == {path}


@pytest.mark.parametrize("name", ["int", "str", "list", "tuple", "bool", "float", "constrained-str", "in_"])
def test_designer_names_that_look_like_types_stay_in_the_path(example_text: str, name: str) -> None:
    """An event field named like a Python type (list, int, ...) keeps its segment in key paths."""
    text = mutate(example_text, ("[events.login]\n", f"[events.login]\nfields.{name} = {{ type = \"float\" }}\n"))
    assert paths_of(text) == {f"events.login.fields.{name}.type"}
    text = mutate(
        example_text,
        ("[events.login]\n", f"[events.login]\nfields.{name} = {{ type = \"int\" }}\n"),
        ("fixed = 1\ndaily_cap = 1", f"fixed = 1\ndaily_cap = 1\nwhere.{name}.eq = [1]"),
    )
    assert paths_of(text) == {f"rules.login_xp.where.{name}.eq"}


def test_a_flood_of_problems_is_cut_short() -> None:
    """Hundreds of mistakes are reported up to a cap, then one line says how many more there are."""
    text = MINIMAL + _many('[rules.r{i}]\nevent = "buy"\ngrant = "xp"\nfixed = 1\nx = 1\ny = 2', 150)
    problems = problems_of(text)
    assert len(problems) == config.MAX_PROBLEMS + 1
    assert problems[-1].reason == f"and 200 more problems (the first {config.MAX_PROBLEMS} are listed)"


def test_a_games_section_is_checked_by_its_game(compile_toml) -> None:
    """[games.checkin] goes through the check-in game's model and cross-checks, named under
    games.checkin; a game that is not installed is named too."""
    base = (ROOT / "config" / "member_day.toml").read_text()
    broken = base.replace("days = 3\n", "days = 0\n").replace("makeup_cards_cap = 3", "makeup_cards_cap = -1")
    broken += '\n[games.roulette]\nspins = 3\n'
    with pytest.raises(ConfigError) as caught:
        compile_toml(broken)
    problems = {(p.path, p.reason) for p in caught.value.problems}
    paths = {path for path, _ in problems}
    assert "games.checkin.makeup_cards_cap" in paths
    assert ("games.roulette", "no game 'roulette' is installed (installed: bargain, cards, checkin, flash, lottery)") in problems
    fixed = broken.replace("makeup_cards_cap = -1", "makeup_cards_cap = 3").replace("\n[games.roulette]\nspins = 3\n", "")
    with pytest.raises(ConfigError) as caught:
        compile_toml(fixed)
    assert [(p.path, p.reason) for p in caught.value.problems] == [
        ("games.checkin.streak_rewards[0].days", "a streak is at least 1 day long: day 0 can never be reached")]
