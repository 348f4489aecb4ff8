"""The live feed's pure rules: frames, their encodings, subprotocol choice, and resuming.

No server here. ``Resume`` is what makes "each effect once, in order" hold while a replay of
the stream and live pub/sub messages race; hypothesis drives every interleaving of the two.
"""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.feed import WHOLE, Award, FeedId, just_before, parse_feed_id
from realtime.frames import (
    FATAL_CLOSE_CODES,
    CloseCode,
    Encoding,
    Frame,
    Resume,
    control,
    frames_from_message,
    frames_of,
)

# --- helpers -------------------------------------------------------------------------------------


StreamId = FeedId


def format_feed_id(sid: FeedId) -> str:
    return f"{sid[0]}-{sid[1]}-{sid[2]}"


def frame(sid: StreamId, kind: str = "xp", **data: Any) -> Frame:
    return Frame(format_feed_id(sid), sid, kind, data or {"amount": sid[1]})


def sids(frames: list[Frame]) -> list[StreamId]:
    return [f.sid for f in frames]


# Feed ids as member.lua makes them: increasing (ms, seq, effect) triples of entries above 0-0. Small
# ranges make equal milliseconds (seq > 0) and digit-count changes (9 -> 10, 99 -> 100) common,
# which is where comparing ids as strings instead of integers would go wrong.
stream_ids = st.lists(
    st.tuples(st.integers(0, 1200), st.integers(0, 120), st.integers(0, 12)).filter(lambda sid: sid[:2] != (0, 0)),
    min_size=1,
    max_size=60,
    unique=True,
).map(sorted)


@st.composite
def resume_races(draw: st.DrawFn) -> tuple[list[StreamId], int, int, int, list[list[StreamId]], int]:
    """A stream and one resuming socket's view of it, in any order the race can produce.

    ``since``: entries up to this index the client has seen. ``subscribed``: entries after this
    index were published after the socket subscribed, so they arrive live, in publish order,
    grouped into messages (one per award). ``read``: the replay read the stream up to here, at
    or after the subscription. ``held``: how many live messages came in before the replay did.
    """
    ids = draw(stream_ids)
    n = len(ids)
    since = draw(st.integers(-1, n - 1))  # -1: "0-0", nothing seen
    subscribed = draw(st.integers(-1, n - 1))
    read = draw(st.integers(max(since, subscribed), n - 1))
    live = ids[subscribed + 1 :]
    cuts = sorted(draw(st.sets(st.integers(1, max(len(live) - 1, 1)), max_size=len(live))))
    cuts = [c for c in cuts if 0 < c < len(live)]
    messages = [live[a:b] for a, b in zip([0, *cuts], [*cuts, len(live)])] if live else []
    held = draw(st.integers(0, len(messages)))
    return ids, since, subscribed, read, messages, held


# --- Resume -------------------------------------------------------------------------------------


@given(resume_races())
def test_resume_any_interleaving_sends_each_id_once_in_order(race: tuple[Any, ...]) -> None:
    """Replay plus live messages, in any interleaving the race allows, yield every id after `since` once, increasing."""
    ids, since, _subscribed, read, messages, held = race
    start = ids[since] if since >= 0 else (0, 0)
    resume = Resume()
    sent: list[Frame] = []
    for message in messages[:held]:  # arrived while the replay was being read: held back
        sent += resume.on_live([frame(s) for s in message])
    assert sent == [] and not resume.live
    replayed = [frame(s) for s in ids[since + 1 : read + 1]]
    sent += resume.on_replay(start, replayed)
    assert resume.live
    for message in messages[held:]:
        sent += resume.on_live([frame(s) for s in message])
    assert sids(sent) == ids[since + 1 :]
    assert resume.last == (ids[-1] if ids[since + 1 :] else start)


OPENINGS = ["since", "end", "moment"]  # since in query or auth frame; ?token= alone (or ping first); auth frame, since null


@st.composite
def openings(draw: st.DrawFn) -> tuple[list[StreamId], str, FeedId, list[StreamId], list[Any]]:
    """A socket's whole life under one opening: its start, what it is owed, and every event.

    The stream ``ids`` grows; entries after index ``accepted`` were made after the accept. The
    start is the client's ``since`` (anywhere); the feed's end read before the accept (``end``);
    or ``just_before`` a moment by the stream's clock (``moment``: the auth frame's opening).
    The socket subscribes after the accept; entries after ``subscribed`` arrive live, grouped
    in messages. Then: messages held during the replay, the replay (read at or after the
    subscription and after what was held), more live messages, and maybe a resume frame from
    any id with its own held messages and replay, then the rest live.
    """
    ids = draw(stream_ids)
    n = len(ids)
    kind = draw(st.sampled_from(OPENINGS))
    if kind == "moment":
        at_ms = draw(st.integers(1, 1201))
        accepted = sum(1 for i in ids if i[0] < at_ms) - 1
        start = just_before(at_ms)
        owed = ids[accepted + 1 :]
    elif kind == "end":
        accepted = draw(st.integers(-1, n - 1))
        end = draw(st.integers(-1, accepted))  # read before the accept
        start = ids[end] if end >= 0 else (0, 0, WHOLE)
        owed = ids[end + 1 :]  # everything after the accept, and what came between the read and it
    else:
        accepted = draw(st.integers(-1, n - 1))
        since = draw(st.integers(-1, n - 1))
        start = ids[since] if since >= 0 else (0, 0, 0)
        owed = ids[since + 1 :]
    subscribed = draw(st.integers(accepted, n - 1))
    live = ids[subscribed + 1 :]
    cuts = sorted(draw(st.sets(st.integers(1, max(len(live) - 1, 1)), max_size=len(live))))
    cuts = [c for c in cuts if 0 < c < len(live)]
    messages = [live[a:b] for a, b in zip([0, *cuts], [*cuts, len(live)])] if live else []
    steps: list[Any] = []
    held = draw(st.integers(0, len(messages)))
    steps += [("live", m) for m in messages[:held]]
    seen = ids.index(messages[held - 1][-1]) if held else subscribed
    read = draw(st.integers(max(seen, subscribed), n - 1))
    steps.append(("replay", start, [i for i in ids[: read + 1] if i > start]))
    more = draw(st.integers(held, len(messages)))
    steps += [("live", m) for m in messages[held:more]]
    if draw(st.booleans()):
        index = draw(st.integers(-1, n - 1))
        resume_since = ids[index] if index >= 0 else (0, 0, 0)
        steps.append(("resume", resume_since))
        held2 = draw(st.integers(more, len(messages)))
        steps += [("live", m) for m in messages[more:held2]]
        last = ids.index(messages[held2 - 1][-1]) if held2 else read
        read2 = draw(st.integers(max(last, read), n - 1))
        steps.append(("replay", resume_since, [i for i in ids[: read2 + 1] if i > resume_since]))
        more = held2
    steps += [("live", m) for m in messages[more:]]
    return ids, kind, start, owed, steps


@given(openings())
def test_resume_every_opening_sends_what_is_owed_once_in_order(life: tuple[Any, ...]) -> None:
    """Under every opening (since, the end read before the accept, the accept's moment), and a resume frame at any point,
    the socket gets every id after its start once, increasing; a resume is honoured unless a feed frame already went out."""
    ids, kind, start, owed, steps = life
    resume = Resume()
    sent: list[Frame] = []
    rewound: FeedId | None = None
    refused = False
    for step in steps:
        if step[0] == "live":
            sent += resume.on_live([frame(s) for s in step[1]])
        elif step[0] == "replay":
            if refused:
                continue  # a refused resume replays nothing
            sent += resume.on_replay(step[1], [frame(s) for s in step[2]])
        else:
            had_sent = bool(sent)
            ok = resume.rewind()
            assert ok is not had_sent
            rewound, refused = (step[1], False) if ok else (None, True)
    if rewound is not None:
        assert sids(sent) == [i for i in ids if i > rewound]
    else:
        assert sids(sent) == owed
    if kind == "moment":
        assert all(i > start for i in owed) and all(i <= start for i in ids[: len(ids) - len(owed)])


@given(stream_ids, st.data())
def test_resume_live_drops_ids_already_sent(ids: list[StreamId], data: st.DataObject) -> None:
    """Once live, a frame at or below the last id sent (a duplicate or a late copy) is dropped."""
    resume = Resume()
    assert resume.on_replay((0, 0), []) == []
    sent: list[Frame] = []
    for sid in ids:
        sent += resume.on_live([frame(sid)])
        again = data.draw(st.sampled_from(ids[: ids.index(sid) + 1]))
        assert resume.on_live([frame(again)]) == []
    assert sids(sent) == ids


def test_resume_from_now_sends_only_newer_held_frames() -> None:
    """Starting at the stream's end (no `since`), held frames at or below that end are dropped, newer ones sent."""
    resume = Resume()
    resume.on_live([frame((5, 0, 0)), frame((5, 1, 0))])
    resume.on_live([frame((7, 0, 0))])
    assert sids(resume.on_replay((5, 1, 0), [])) == [(7, 0, 0)]


def test_resume_sorts_held_frames_and_keeps_replay_first() -> None:
    """Held frames follow the replay in id order even if they were held out of order."""
    resume = Resume()
    resume.on_live([frame((9, 0, 0))])
    resume.on_live([frame((8, 0, 0)), frame((8, 1, 0))])
    out = resume.on_replay((3, 0, 0), [frame((4, 0, 0)), frame((8, 0, 0))])
    assert sids(out) == [(4, 0, 0), (8, 0, 0), (8, 1, 0), (9, 0, 0)]


def test_resume_start_never_moves_backwards() -> None:
    """A second on_replay with an older start does not resend what was sent."""
    resume = Resume()
    assert sids(resume.on_replay((2, 0, 0), [frame((3, 0, 0))])) == [(3, 0, 0)]
    assert resume.on_replay((1, 0, 0), [frame((2, 5, 0)), frame((3, 0, 0))]) == []


def test_rewind_before_any_feed_frame_replays_from_an_older_id() -> None:
    """A resume before any feed frame went out holds live frames again and replays from its older id, merged."""
    resume = Resume()
    assert resume.on_replay((5, 0, WHOLE), []) == []  # live from the end: nothing owed yet
    assert resume.on_live([frame((5, 0, 1))]) == []  # a late copy of an entry at or before the end
    assert resume.rewind() and not resume.live
    assert resume.on_live([frame((6, 0, 0))]) == []  # held
    out = resume.on_replay((4, 0, 0), [frame((4, 0, 1)), frame((5, 0, 0)), frame((5, 0, 1)), frame((6, 0, 0))])
    assert sids(out) == [(4, 0, 1), (5, 0, 0), (5, 0, 1), (6, 0, 0)]


def test_rewind_after_a_feed_frame_is_refused_and_changes_nothing() -> None:
    """Once a feed frame went out, rewind answers False and live frames keep flowing in order."""
    resume = Resume()
    resume.on_replay((5, 0, WHOLE), [])
    assert sids(resume.on_live([frame((6, 0, 0))])) == [(6, 0, 0)]
    assert not resume.rewind()
    assert resume.live and resume.sent_any
    assert sids(resume.on_live([frame((6, 0, 0)), frame((7, 0, 0))])) == [(7, 0, 0)]


def test_a_moment_start_sends_every_entry_of_that_millisecond_and_later() -> None:
    """just_before(ms) sorts after every id of earlier milliseconds and before ms-0-0."""
    resume = Resume()
    resume.on_live([frame((99, 7, 3)), frame((100, 0, 0))])
    assert sids(resume.on_replay(just_before(100), [frame((99, 120, 12))])) == [(100, 0, 0)]


# --- frames and encodings -------------------------------------------------------------------------


def test_frame_json_is_text_with_id_type_data() -> None:
    """JSON encoding is text {"id", "type", "data"}."""
    f = frame((1795695206746, 3, 0), "tier_up", **{"from": "bronze", "to": "silver", "event": "e-1"})
    text = f.encoded(Encoding.JSON)
    assert isinstance(text, str)
    data = {"from": "bronze", "to": "silver", "event": "e-1"}
    assert orjson.loads(text) == {"id": "1795695206746-3-0", "type": "tier_up", "data": data}


def test_frame_msgpack_is_binary_with_the_same_content() -> None:
    """msgpack encoding is bytes holding the same object as the JSON encoding."""
    f = frame((12, 0, 0), "points", amount=5, balance=105, reason="purchase_points")
    raw = f.encoded(Encoding.MSGPACK)
    assert isinstance(raw, bytes)
    assert msgpack.unpackb(raw, raw=False) == orjson.loads(f.encoded(Encoding.JSON))


def test_frame_is_encoded_once_per_encoding() -> None:
    """The same frame sent to many sockets is encoded once per encoding (the same object comes back)."""
    f = frame((1, 1, 0))
    assert f.encoded(Encoding.JSON) is f.encoded(Encoding.JSON)
    assert f.encoded(Encoding.MSGPACK) is f.encoded(Encoding.MSGPACK)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_control_frames_have_no_id(encoding: Encoding) -> None:
    """pong, reset and error frames carry a type and their fields, and no id, in either encoding."""
    for kind, extra in (("pong", {}), ("reset", {"reason": "trimmed"}), ("error", {"code": "unknown_op", "message": "m"})):
        raw = control(kind, encoding, **extra)
        assert isinstance(raw, str if encoding is Encoding.JSON else bytes)
        body = orjson.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
        assert body == {"type": kind, **extra}


def test_frames_from_message_reads_award_lua_publish() -> None:
    """A pub/sub message [entry id, event id, effects] becomes frames <entry>-<i>, each with the event id."""
    raw = msgpack.packb(["10-0", "order-1", [["xp", {"amount": 3}], ["points", {"amount": 2}]]])
    frames = frames_from_message(raw)
    assert [(f.id, f.sid, f.type, f.data) for f in frames] == [
        ("10-0-0", (10, 0, 0), "xp", {"amount": 3, "event": "order-1"}),
        ("10-0-1", (10, 0, 1), "points", {"amount": 2, "event": "order-1"}),
    ]


def test_an_award_without_effects_gives_no_frames() -> None:
    """An applied award that earned nothing publishes no entry id and yields no frame."""
    assert frames_from_message(msgpack.packb(["", "order-1", []])) == []


def test_replayed_award_matches_the_live_message() -> None:
    """A stream entry read back in a replay gives the same frames as the live message did."""
    live = frames_from_message(msgpack.packb(["10-0", "order-1", [["xp", {"amount": 3}]]]))
    replayed = frames_of(Award("10-0", "order-1", [("xp", {"amount": 3})]))
    assert [f.encoded(Encoding.JSON) for f in replayed] == [f.encoded(Encoding.JSON) for f in live]


# --- negotiation and close codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], None),
        (["chat", "v2.json"], None),
        (["rekindle.json"], Encoding.JSON),
        (["rekindle.msgpack"], Encoding.MSGPACK),
        (["rekindle.msgpack", "rekindle.json"], Encoding.MSGPACK),
        (["rekindle.json", "rekindle.msgpack"], Encoding.JSON),
        (["chat", "rekindle.msgpack"], Encoding.MSGPACK),
        (["REKINDLE.MSGPACK", "rekindle.msgpack2"], None),
    ],
)
def test_negotiate_picks_the_clients_first_subprotocol_of_ours(offered: list[str], chosen: Encoding | None) -> None:
    """The first of our subprotocols in the client's order wins; none of ours gives None (JSON, unnamed)."""
    assert Encoding.negotiate(offered) is chosen


def test_close_codes_and_which_are_fatal() -> None:
    """Close codes are the documented numbers; bad request, unauthorized and too many sockets forbid a plain retry."""
    assert {c.name: int(c) for c in CloseCode} == {
        "SERVICE_RESTART": 1012,
        "BAD_REQUEST": 4400,
        "UNAUTHORIZED": 4401,
        "SLOW_CONSUMER": 4408,
        "RESUME": 4409,
        "TOO_MANY": 4429,
    }
    assert FATAL_CLOSE_CODES == {4400, 4401, 4429}


@given(st.tuples(st.integers(0, 10**15 - 1), st.integers(0, 10**10 - 1), st.integers(0, 999_999)))
def test_feed_ids_round_trip(sid: FeedId) -> None:
    """A feed id formats and parses back to the same integer triple."""
    assert parse_feed_id(format_feed_id(sid)) == sid


def test_a_bare_entry_id_means_the_whole_award() -> None:
    """<ms>-<seq> (the snapshot's feed_id) sorts after every effect of that award."""
    assert parse_feed_id("10-2") == (10, 2, WHOLE)
    assert parse_feed_id("10-2-999999") < parse_feed_id("10-2") < parse_feed_id("10-3-0")


@pytest.mark.parametrize("bad", ["abc", "", "1-", "-1", "1-2-3-4", " 1-2", "1.5-0", "1-2-", None, 17, ["1-0"]])
def test_bad_feed_ids_are_refused(bad: object) -> None:
    """Anything but <ms>-<seq>[-<i>] digits is refused naming the field."""
    with pytest.raises(InvalidInput) as info:
        parse_feed_id(bad, "since")
    assert info.value.field == "since"


def test_a_shed_socket_waits_what_the_server_asked() -> None:
    """LiveClient reads the wait out of a 1013 close's reason; other closes ask for none."""
    from realtime.client import retry_after_s

    assert retry_after_s(1013, "overloaded; reconnect after 2 s with ?since=<last id seen>") == 2.0
    assert retry_after_s(1013, "going away") == 0.0  # a node draining: come back at once
    assert retry_after_s(1013, "") == 0.0
    assert retry_after_s(1000, "overloaded; reconnect after 2 s") == 0.0
    assert retry_after_s(None, None) == 0.0
