"""The simulation's report: one self-contained HTML file (plotly, its JavaScript inlined: it opens
offline), the summary and its warnings on top, then the plots; with a second run, both side by
side and the summary's differences marked."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from realtime.simulate import Report

_KPIS = ("active", "buyers", "new", "dormant", "woken")


def render(reports: Sequence[Report]) -> str:
    """The HTML page for one run, or for runs of two programmes on one population."""
    figures = [
        _tiers(reports),
        _points(reports),
        _quests(reports),
        _care(reports),
        _kpis(reports),
    ]
    played = any(row.kpis.get("games") and any(row.kpis["games"].values()) for r in reports for row in r.rows)
    drawn = ("<p>Played through the games' own routes: check-ins, flash-sale claims, spins, card draws and combines, "
             "bargain starts and helps (the summary's <i>game</i> rows, and what they gave).</p>")
    if played:
        figures.append(_games(reports))
    if any(row.games for r in reports for row in r.rows):
        figures.append(_outcomes(reports))
    if any(r.budgets for r in reports):
        figures.append(_budgets(reports))
    parts = []
    for i, fig in enumerate(figures):
        fig.update_layout(template="plotly_white", height=420, margin={"t": 60, "l": 60, "r": 30, "b": 50})
        # plotly.js once, inlined in the first figure: the file opens with no network.
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False}))
    title = " vs ".join(f"{r.program} ({r.program_hash})" for r in reports)
    first = reports[0]
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>rekindle simulate: {html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.diff{background:#fff3c4}"
        ".warn{color:#9a3412}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{first.members:,} members, {first.days} days from {first.start_day}, seed {first.seed}; "
        + "; ".join(f"{r.events:,} events in {r.seconds:.0f} s ({r.events / max(r.seconds, 1e-9):,.0f}/s)" for r in reports)
        + "</p>"
        + _summary_table(reports)
        + _warnings(reports)
        + "".join(parts)
        + drawn
        + "</body></html>"
    )


def _summary_rows(report: Report) -> list[tuple[str, str]]:
    s = report.summary()
    rows = [("events", f"{s['events']:,}")]
    population = max(1, report.members)
    for tier, n in s["tiers_at_end"].items():
        rows.append((f"members in {tier} at the end", f"{n:,} ({n / population:.1%})"))
    p = s["points"]
    rows += [("points issued", f"{p['issued']:,}"), ("points spent", f"{p['spent']:,}"),
             ("points expired", f"{p['expired']:,}"), ("points outstanding", f"{p['outstanding']:,}"),
             ("liability", f"¥{p['liability_cents'] / 100:,.2f}"), ("coupons granted", f"{s['coupons_granted']:,}"),
             ("refunds", f"{s['refunds']:,}")]
    rows += [(f"quest {q} completed", f"{n:,}") for q, n in s["quests_completed"].items()]
    rows += [(f"care: {m}", f"{n:,}") for m, n in s["care_moments"].items()]
    rows += [(f"game {k}", f"{n:,}") for k, n in s["games"].items()]
    rows += [(f"flash sale {sale} sold out on", f"{d[:4]}-{d[4:6]}-{d[6:]}") for sale, d in s["flash_sold_out"].items()]
    rows += [(k.replace(":", " "), f"{n:,}") for k, n in s["game_outcomes"].items()]
    for campaign, b in s["bargains"].items():
        rows += [(f"bargain {campaign}: started", f"{b['started']:,}"), (f"bargain {campaign}: helps", f"{b['helps']:,}"),
                 (f"bargain {campaign}: reached the floor", f"{b['reached_floor']:,}"),
                 (f"bargain {campaign}: expired", f"{b['expired']:,}")]
    for wheel, w in s["lottery_budget"].items():
        rows.append((f"wheel {wheel}: budget spent", f"{w['spent']:,} of {w['budget']:,}"))
        if w["ran_out_on"]:
            d = w["ran_out_on"]
            rows.append((f"wheel {wheel}: budget ran out on", f"{d[:4]}-{d[4:6]}-{d[6:]}"))
    return rows


def _summary_table(reports: Sequence[Report]) -> str:
    columns = [dict(_summary_rows(r)) for r in reports]
    names: list[str] = []
    for c in columns:
        names += [n for n in c if n not in names]
    head = "".join(f"<th>{html.escape(r.program_hash)}</th>" for r in reports)
    body = []
    for name in names:
        values = [c.get(name, "-") for c in columns]
        marked = ' class="diff"' if len(set(values)) > 1 else ""
        body.append(f"<tr{marked}><td>{html.escape(name)}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in values)
                    + "</tr>")
    return f"<h2>Summary</h2><table><tr><th>figure</th>{head}</tr>{''.join(body)}</table>"


def _warnings(reports: Sequence[Report]) -> str:
    items = [f"<li class=\"warn\">{html.escape(r.program_hash)}: {html.escape(w)}</li>"
             for r in reports for w in r.warnings()]
    return "<h2>Warnings</h2><ul>" + ("".join(items) or "<li>none</li>") + "</ul>"


def _days(report: Report) -> list[str]:
    return [f"{r.day[:4]}-{r.day[4:6]}-{r.day[6:]}" for r in report.rows]


def _side(reports: Sequence[Report], title: str) -> Any:
    if len(reports) == 1:
        fig = go.Figure()
        fig.update_layout(title=title)
        return fig
    fig = make_subplots(rows=1, cols=len(reports), subplot_titles=[r.program_hash for r in reports], shared_yaxes=True)
    fig.update_layout(title=title)
    return fig


def _add(fig: Any, reports: Sequence[Report], col: int, trace: Any) -> None:
    if len(reports) == 1:
        fig.add_trace(trace)
    else:
        fig.add_trace(trace, row=1, col=col)


def _tiers(reports: Sequence[Report]) -> Any:
    fig = _side(reports, "Members per tier, by day")
    for col, r in enumerate(reports, 1):
        for tier in r.tier_ids:
            _add(fig, reports, col, go.Scatter(x=_days(r), y=[row.tiers.get(tier, 0) for row in r.rows], name=tier,
                                               stackgroup=f"t{col}", legendgroup=tier, showlegend=col == 1))
    return fig


def _points(reports: Sequence[Report]) -> Any:
    fig = make_subplots(specs=[[{"secondary_y": True}]]) if len(reports) == 1 else _side(reports, "")
    fig.update_layout(title="Points issued, spent and expired a day; the liability in money")
    for col, r in enumerate(reports, 1):
        days = _days(r)
        for key, name in (("points_issued", "issued"), ("points_spent", "spent"), ("points_expired", "expired")):
            _add(fig, reports, col, go.Bar(x=days, y=[row.kpis.get(key, 0) for row in r.rows], name=name,
                                           legendgroup=name, showlegend=col == 1))
        liability = go.Scatter(x=days, y=[row.liability_points * r.point_value_cents / 100 for row in r.rows],
                               name="liability (¥)", mode="lines", legendgroup="liability", showlegend=col == 1)
        if len(reports) == 1:
            fig.add_trace(liability, secondary_y=True)
        else:
            _add(fig, reports, col, liability)
    return fig


def _quests(reports: Sequence[Report]) -> Any:
    return _totals(reports, "quests_completed", "Quest completions over the run")


def _care(reports: Sequence[Report]) -> Any:
    return _totals(reports, "care_moments", "Care moments granted over the run")


def _totals(reports: Sequence[Report], key: str, title: str) -> Any:
    """A bar a name of the summary's ``key`` (a name -> count map), a group a run."""
    fig = go.Figure()
    fig.update_layout(title=title, barmode="group")
    for r in reports:
        counts = r.summary()[key]
        fig.add_trace(go.Bar(x=list(counts) or ["none"], y=list(counts.values()) or [0], name=r.program_hash))
    return fig


def _kpis(reports: Sequence[Report]) -> Any:
    fig = _side(reports, "KPIs a day")
    for col, r in enumerate(reports, 1):
        for key in _KPIS:
            _add(fig, reports, col, go.Scatter(x=_days(r), y=[row.kpis.get(key, 0) for row in r.rows], name=key,
                                               mode="lines+markers", legendgroup=key, showlegend=col == 1))
    return fig


def _games(reports: Sequence[Report]) -> Any:
    fig = _side(reports, "Game players a day (KPIs)")
    for col, r in enumerate(reports, 1):
        names = sorted({g for row in r.rows for g in row.kpis.get("games", {})})
        for game in names:
            _add(fig, reports, col, go.Scatter(x=_days(r), y=[row.kpis.get("games", {}).get(game, 0) for row in r.rows],
                                               name=game, mode="lines", legendgroup=game, showlegend=col == 1))
    return fig


def _outcomes(reports: Sequence[Report]) -> Any:
    """What the games gave a day: prizes (by prize), cards (all of a campaign's in one bar: the
    summary has them by card), sets combined, bargains at the floor or expired."""
    fig = _side(reports, "What the games gave, a day")
    fig.update_layout(barmode="stack")

    def series(key: str) -> str:
        kind, _, rest = key.partition(":")
        return f"cards drawn {rest.split(':')[0]}" if kind == "card" else key.replace(":", " ")

    for col, r in enumerate(reports, 1):
        days: list[dict[str, int]] = []
        for row in r.rows:
            day: dict[str, int] = {}
            for key, n in row.games.items():
                day[series(key)] = day.get(series(key), 0) + n
            days.append(day)
        for name in sorted({k for day in days for k in day}):
            _add(fig, reports, col, go.Bar(x=_days(r), y=[day.get(name, 0) for day in days], name=name,
                                           legendgroup=name, showlegend=col == 1))
    return fig


def _budgets(reports: Sequence[Report]) -> Any:
    """Each wheel's budget spent by the day's end, against the budget."""
    fig = _side(reports, "Lottery budget spent, by the day's end")
    for col, r in enumerate(reports, 1):
        days = _days(r)
        for wheel, (budget, _) in sorted(r.budgets.items()):
            _add(fig, reports, col, go.Scatter(x=days, y=[row.budget_spent.get(wheel, 0) for row in r.rows],
                                               name=f"{wheel}: spent", mode="lines+markers", legendgroup=wheel,
                                               showlegend=col == 1))
            _add(fig, reports, col, go.Scatter(x=days, y=[budget] * len(days), name=f"{wheel}: budget",
                                               mode="lines", line={"dash": "dash"}, legendgroup=wheel,
                                               showlegend=col == 1))
    return fig
