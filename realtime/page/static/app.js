// The member page: the reference client app developers copy. Plain JavaScript, no build step, no
// CDN: it draws the member from GET /v1/me, then follows the live feed (GET /v1/live, a
// WebSocket) from the snapshot's feed_id, resuming from the last effect shown after a dropped
// connection, so nothing is missed and nothing shown twice (docs/live-feed.md, "A browser").
//
// A friend's bargain: `?bargain=<id>` (the share link the owner's page gives) shows it with a Help
// button, followed live with a watch on the same socket (docs/live-feed.md, "Watching a bargain").
//
// The member token: `?token=` in development (`rekindle token --url MEMBER` prints such a link;
// it is moved to sessionStorage and out of the address bar at once), or from the app that embeds
// the page: `window.REKINDLE_TOKEN`, or a message {type: "rekindle.token", token}.
"use strict";

const rekindle = (() => {
  const $ = (id) => document.getElementById(id);
  const state = { token: null, me: null, lastId: null, ws: null, wait: 500, stopped: false, refresh: null,
                  frames: 0, shown: new Set(), received: [], campaigns: [], views: {},
                  friend: new URLSearchParams(location.search).get("bargain"), watched: {}, watchFrames: [],
                  watchSince: null, pending: {} };

  function takeToken() {
    const params = new URLSearchParams(location.search);
    const given = params.get("token");
    if (given) {
      sessionStorage.setItem("rekindle.token", given);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
      return given;
    }
    return window.REKINDLE_TOKEN || sessionStorage.getItem("rekindle.token");
  }

  function signedOut(why) {
    state.stopped = true;
    if (state.ws) state.ws.close(1000);
    sessionStorage.removeItem("rekindle.token");
    $("status").hidden = true;
    $("member").hidden = true;
    $("signed-out").hidden = false;
    $("signed-out-why").textContent = why;
  }

  async function api(method, path, body) {
    const reply = await fetch(path, {
      method,
      headers: { authorization: `Bearer ${state.token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (reply.status === 401) {
      signedOut("Your session has expired: open the page again from the app.");
      throw new Error("unauthorized");
    }
    const data = await reply.json().catch(() => ({}));
    return { ok: reply.ok, status: reply.status, data };
  }

  const newId = () => `page-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const day = (ms) => new Date(ms).toLocaleDateString();
  const money = (cents) => `¥${(cents / 100).toFixed(2)}`;
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }
  function bar(fraction) {
    const outer = el("div", undefined, "bar");
    const fill = el("div", undefined, "fill");
    fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    outer.appendChild(fill);
    return outer;
  }

  function draw(me) {
    state.me = me;
    $("status").hidden = true;
    $("signed-out").hidden = true;
    $("member").hidden = false;
    $("member-id").textContent = me.member;
    const tier = me.tier;
    $("tier-name").textContent = tier.name;
    $("xp").textContent = tier.qualified.toLocaleString();
    $("xp-unit").textContent = tier.qualify_on === "spend" ? "spent (cents)" : "XP";
    $("next-tier").textContent = tier.next ? `${tier.next.xp_to_go.toLocaleString()} more to ${tier.next.name}` : "the top tier";
    $("xp-bar").style.width = `${tier.next ? Math.min(100, (100 * tier.qualified) / Math.max(1, tier.next.xp)) : 100}%`;
    $("keep").hidden = !tier.keep;
    if (tier.keep) {
      $("keep").textContent = tier.keep.need > 0
        ? `Keep ${tier.name}: ${tier.keep.need.toLocaleString()} more by ${day(tier.keep.by_ms)}`
        : `${tier.name} is kept until ${day(tier.keep.by_ms)}`;
    }
    const points = me.points;
    $("balance").textContent = points.balance.toLocaleString();
    const soon = points.expiring[0];
    $("expiring").textContent = soon ? `${soon.amount.toLocaleString()} expire on ${day(soon.expires_at_ms)}`
      : (points.debt ? `${points.debt} owed` : "none expiring");

    const quests = $("quests");
    quests.replaceChildren(...me.quests.map((q) => {
      const li = el("li");
      li.dataset.quest = q.id;
      li.appendChild(el("div", `${q.title} · ${q.progress.toLocaleString()} / ${q.target.toLocaleString()}`
        + (q.state === "completed" ? " ✓" : "")));
      li.appendChild(bar(q.progress / q.target));
      return li;
    }));
    const coupons = $("coupons");
    const usable = me.rewards.filter((c) => c.state === "granted");
    coupons.replaceChildren(...(usable.length ? usable.map((c) => {
      const li = el("li", `${c.title}` + (c.expires_at_ms ? ` · until ${day(c.expires_at_ms)}` : ""));
      li.dataset.coupon = c.coupon;
      return li;
    }) : [el("li", "No coupons yet", "muted")]));
    drawGames(me.games || {});
  }

  // A button whose action is sent with an idempotency key, kept (in state.pending, by the action's
  // own key, so a redraw of the button keeps it too) until an answer settles it: a success, or a
  // refusal that is final. A lost reply, a 5xx, a 429 or `in_progress` leave the outcome unknown
  // or pending: a press again resends the same key, so it is the same action (a duplicate), never
  // a second spin, claim or help.
  function action(label, key, run, after) {
    const button = el("button", label);
    const answer = el("span", "", "answer muted");
    button.addEventListener("click", async () => {
      button.disabled = true;
      const id = state.pending[key] || (state.pending[key] = newId());
      try {
        const reply = await run(id);
        const code = reply.data.error ? reply.data.error.code : "";
        if (reply.ok || (reply.status >= 400 && reply.status < 500 && reply.status !== 429 && code !== "in_progress")) {
          delete state.pending[key];
        }
        answer.textContent = reply.ok ? "done" : (reply.data.error ? reply.data.error.message : `refused (${reply.status})`);
        if (reply.ok && after) await after(); // what no feed effect follows (a bargain's start)
      } catch (error) {
        answer.textContent = "could not reach the service: press again to retry";
      } finally {
        button.disabled = false;
      }
    });
    const span = el("span");
    span.append(button, answer);
    return span;
  }

  function gameCard(title, ...children) {
    const card = el("section", undefined, "card");
    card.appendChild(el("h2", title));
    card.append(...children);
    return card;
  }

  function drawGames(games) {
    const cards = [];
    const c = games.checkin;
    if (c) {
      const button = action(c.checked_in_today ? "Checked in today" : "Check in", "checkin", () => api("POST", "/v1/me/checkin", {}));
      button.querySelector("button").disabled = c.checked_in_today;
      button.querySelector("button").id = "checkin";
      cards.push(gameCard(c.title, el("p", `Streak: ${c.current} days (longest ${c.longest}) · make-up cards: ${c.makeup_cards}`),
        button));
    }
    for (const [name, w] of Object.entries(games.lottery || {})) {
      cards.push(gameCard(w.title, el("p", `${w.spins} spins left`),
        action("Spin", `spin:${name}`, (id) => api("POST", `/v1/games/lottery/${encodeURIComponent(name)}/spin`, { id }))));
    }
    for (const [name, s] of Object.entries(games.flash || {})) {
      const when = el("p", "", "countdown");
      when.dataset.opens = s.opens_at_ms || "";
      when.dataset.ends = s.ends_at_ms || "";
      cards.push(gameCard(s.title, el("p", s.price_points ? `${s.price_points.toLocaleString()} points` : "free"), when,
        action("Claim", `claim:${name}`, (id) => api("POST", `/v1/games/flash/${encodeURIComponent(name)}/claim`, { id }))));
    }
    for (const [name, k] of Object.entries(games.cards || {})) {
      const path = `/v1/games/cards/${encodeURIComponent(name)}`;
      const chips = el("p", undefined, "chips");
      chips.append(...Object.entries(k.cards).map(([card, n]) => el("span", `${card} × ${n}`)));
      // A gift: one of the cards held, to a friend by member id.
      const held = Object.entries(k.cards).filter(([, n]) => n > 0).map(([card]) => card);
      const gift = el("p", undefined, "gift");
      if (held.length) {
        const which = el("select");
        which.className = "gift-card";
        which.append(...held.map((card) => { const o = el("option", card); o.value = card; return o; }));
        const to = el("input");
        to.className = "gift-to";
        to.placeholder = "friend's member id";
        to.maxLength = 128;
        gift.append(which, to, action("Give", `gift:${name}`, (id) => api("POST", `${path}/gift`, { id, to: to.value.trim(), card: which.value })));
      }
      const combine = action("Combine a set", `combine:${name}`, (id) => api("POST", `${path}/combine`, { id }));
      combine.querySelector("button").className = "combine";
      const drawOne = action("Draw", `draw:${name}`, (id) => api("POST", `${path}/draw`, { id }));
      drawOne.querySelector("button").className = "draw";
      cards.push(gameCard(`Cards: ${name}`, chips, el("p", `${k.chances} draws left` + (k.combined ? " · set combined ✓" : "")),
        drawOne, gift, combine));
    }
    $("games").replaceChildren(...cards);
    tick();
  }

  // Bargains (砍价): the campaigns the member may start (GET /v1/games/bargain), each with the
  // member's latest bargain read in full (its helps), and a friend's from the share link.
  async function loadBargains() {
    const list = await api("GET", "/v1/games/bargain");
    if (!list.ok) return;
    state.campaigns = list.data.campaigns;
    const ids = state.campaigns.map((c) => c.bargain).filter(Boolean);
    if (state.friend) ids.push(state.friend);
    const views = await Promise.all(ids.map((id) => api("GET", `/v1/games/bargain/${encodeURIComponent(id)}`)));
    ids.forEach((id, i) => { if (views[i].ok) state.views[id] = views[i].data; });
    drawBargains();
  }

  function bargainBody(b) {
    const cut = (b.price_cents - b.current_cents) / Math.max(1, b.price_cents - b.floor_cents);
    const body = el("div", undefined, "bargain");
    body.dataset.bargain = b.id;
    body.append(
      el("p", `${money(b.current_cents)} now · floor ${money(b.floor_cents)} · from ${money(b.price_cents)}`, "price"),
      bar(cut),
      el("p", `${b.helps.length} ${b.helps.length === 1 ? "help" : "helps"} · ${b.state}` + (b.state === "open" ? ` · until ${new Date(b.expires_at_ms).toLocaleString()}` : ""), "muted"));
    const helps = el("ul", undefined, "list helps");
    helps.append(...b.helps.slice(-5).reverse().map((h) => el("li", `${h.helper} cut ${money(h.cut_cents)}`)));
    body.appendChild(helps);
    return body;
  }

  function drawBargains() {
    const cards = [];
    for (const c of state.campaigns) {
      const mine = c.bargain && state.views[c.bargain];
      const parts = [];
      if (mine) parts.push(bargainBody(mine));
      if (mine && mine.state === "open") {
        const link = `${location.origin}${location.pathname}?bargain=${encodeURIComponent(mine.id)}`;
        const share = el("p", "Share with friends: ", "share muted");
        const a = el("a", link);
        a.href = link;
        share.appendChild(a);
        parts.push(share);
      } else if (c.state === "open" && c.eligible) {
        const start = action(mine ? "Start another" : "Start", `start:${c.campaign}`, () => api("POST", "/v1/games/bargain", { campaign: c.campaign }),
          loadBargains);
        start.querySelector("button").className = "start-bargain";
        parts.push(el("p", `${c.helpers} friends' helps take it from ${money(c.price_cents)} to ${money(c.floor_cents)} `
          + `within ${c.duration_hours} hours`, "muted"), start);
      }
      const card = gameCard(`${c.title}`, ...parts);
      card.dataset.campaign = c.campaign;
      cards.push(card);
    }
    const friend = state.friend && state.views[state.friend];
    if (friend && state.me && friend.owner !== state.me.member) {
      const helped = friend.helps.some((h) => h.helper === state.me.member);
      const help = action(helped ? "Helped ✓" : "Help", `help:${friend.id}`,
        (id) => api("POST", `/v1/games/bargain/${encodeURIComponent(friend.id)}/help`, { id }));
      help.querySelector("button").id = "help";
      help.querySelector("button").disabled = helped || friend.state !== "open";
      const campaign = state.campaigns.find((c) => c.campaign === friend.campaign);
      const card = gameCard(`Help ${friend.owner}: ${campaign ? campaign.title : friend.item}`, bargainBody(friend), help);
      card.id = "friend";
      cards.unshift(card);
    }
    $("bargains").replaceChildren(...cards);
    if (friend) watch(friend.id);
  }

  // A friend's bargain, live on this socket: watched as the socket opens (again after each
  // reconnect, from the last watched frame), and read once the watch holds (its `watching`
  // answer), so no help falls between the read and the watch (docs/live-feed.md).
  function watch(id) {
    const ws = state.ws;
    if (!ws || ws.readyState !== 1 || state.watched[id] === ws) return;
    state.watched[id] = ws;
    ws.send(JSON.stringify({ op: "watch", bargain: id, since: state.watchSince }));
  }

  function tick() { // the flash sales' countdowns
    const now = Date.now();
    for (const node of document.querySelectorAll(".countdown")) {
      const opens = Number(node.dataset.opens || 0), ends = Number(node.dataset.ends || 0);
      if (opens && now < opens) {
        const s = Math.ceil((opens - now) / 1000);
        node.textContent = `opens in ${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ${s % 60}s`;
      } else if (ends && now >= ends) {
        node.textContent = "ended";
      } else {
        node.textContent = ends ? `open until ${new Date(ends).toLocaleString()}` : "open now";
      }
    }
  }

  function describe(frame) {
    const d = frame.data || {};
    switch (frame.type) {
      case "xp": return `${d.amount > 0 ? "+" : ""}${d.amount} XP`;
      case "points": return `${d.amount > 0 ? "+" : ""}${d.amount} points (${d.reason})`;
      case "quest_progress": return `Quest ${d.quest}: ${d.progress} / ${d.target}`;
      case "quest_completed": return `Quest done: ${d.quest}`;
      case "tier_up": return `Welcome to ${d.to}!`;
      case "tier_kept": return `${d.tier} kept until ${day(d.until_ms)}`;
      case "tier_down": return `Now ${d.to}`;
      case "reward": return `New coupon: ${d.item}`;
      case "streak": return `Check-in streak: ${d.current} days`;
      case "care": return d.title || d.moment;
      case "bargain_helped": return `${state.me && d.helper === state.me.member ? "You" : d.helper} cut ${money(d.cut_cents)}: now ${money(d.current_cents)}`;
      case "bargain_done": return `Bargain done: ${d.item} for ${money(d.price_cents)}`;
      case "bargain_expired": return `Bargain expired at ${money(d.current_cents)}`;
      case "prize": return `Prize: ${d.title}`;
      case "card_drawn": return `Card: ${d.card}`;
      case "card_given": return `Gave ${d.card} to ${d.to}`;
      case "card_received": return `Got ${d.card} from ${d.from}`;
      case "cards_combined": return `Set combined: ${d.campaign}`;
      default: return frame.type.replace(/_/g, " ");
    }
  }

  function show(frame) {
    if (state.shown.has(frame.id)) return; // never twice (a feed id is unique)
    state.shown.add(frame.id);
    state.frames += 1;
    const feed = $("feed");
    const li = el("li", describe(frame));
    li.dataset.id = frame.id;
    feed.prepend(li);
    while (feed.children.length > 30) feed.lastChild.remove();
    // The balance at once; the rest (the tier's figure depends on its policy) with the snapshot
    // drawn again just after.
    if (frame.type === "points") $("balance").textContent = frame.data.balance.toLocaleString();
    redrawSoon(150);
  }

  // One redraw for a burst of frames: each frame puts it off (ms) until the burst is over.
  function redrawSoon(ms) {
    clearTimeout(state.refresh);
    state.refresh = setTimeout(redraw, ms);
  }

  async function redraw() {
    try {
      const reply = await api("GET", "/v1/me");
      if (reply.ok) draw(reply.data);
      await loadBargains();
    } catch (error) { /* signed out (said on the page), or unreachable: the next effect redraws */ }
  }

  function connect() {
    if (state.stopped) return;
    const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/v1/live", "rekindle.json");
    state.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: "auth", token: state.token, since: state.lastId }));
      $("live").textContent = "live";
      $("live").className = "live on";
      if (state.friend) watch(state.friend); // before the bargain is read; resumes from watchSince
    };
    ws.onmessage = async (message) => {
      const frame = JSON.parse(message.data);
      state.wait = 500;
      if (frame.bargain && frame.id) { // a watched bargain's frame: its id is the owner's, not this feed's
        state.watchFrames.push(frame.id);
        state.watchSince = frame.id;
        redrawSoon(150);
      } else if (frame.type === "watching") {
        // From here the watch holds: read the bargain (again, after a reset: the frames between
        // the `since` asked and now are gone), and resume later from what follows.
        if (!state.watchSince || frame.reset) state.watchSince = frame.since;
        redrawSoon(0);
      } else if (frame.type === "error" && frame.bargain) { // a watch refused: retried when it may succeed
        if (state.watched[frame.bargain] === ws) delete state.watched[frame.bargain];
        if (frame.code === "overloaded" || frame.code === "unavailable") {
          setTimeout(() => watch(frame.bargain), 1000 * (frame.retry_after_s || 1));
        }
      } else if (frame.id) {
        state.received.push(frame.id); // every feed frame as it came (the tests check each came once)
        state.lastId = frame.id;
        show(frame);
      } else if (frame.type === "reset") { // lastId is older than the feed keeps: draw afresh
        try {
          const reply = await api("GET", "/v1/me");
          if (reply.ok) {
            draw(reply.data);
            state.lastId = reply.data.feed_id;
          }
        } catch (error) { /* signed out, or unreachable: the socket's close says which */ }
      }
    };
    ws.onclose = (event) => {
      $("live").textContent = "reconnecting";
      $("live").className = "live off";
      if (state.stopped || ws !== state.ws) return;
      if (event.code === 4401) return signedOut("Your session has expired: open the page again from the app.");
      if (event.code === 4400 || event.code === 4429) return;
      const asked = /after (\d+(?:\.\d+)?) s/.exec(event.reason);
      setTimeout(connect, asked ? asked[1] * 1000 : state.wait); // resumes from lastId: nothing is lost
      state.wait = Math.min(state.wait * 2, 30000);
    };
  }

  async function start(token) {
    state.token = token;
    state.stopped = false;
    if (!token) return signedOut("No member token: open this page from the app, or with a link from `rekindle token --url`.");
    try {
      const reply = await api("GET", "/v1/me");
      if (!reply.ok) return signedOut(reply.data.error ? reply.data.error.message : "The service refused the token.");
      draw(reply.data);
      state.lastId = reply.data.feed_id; // nothing between the snapshot and the feed is missed
      connect();
      setInterval(tick, 1000);
      await loadBargains();
    } catch (error) {
      if (!state.stopped) $("status").textContent = "The service cannot be reached; try again shortly.";
    }
  }

  window.addEventListener("message", (event) => {
    if (event.origin === location.origin && event.data && event.data.type === "rekindle.token" && !state.token) {
      start(event.data.token);
    }
  });
  document.addEventListener("DOMContentLoaded", () => start(takeToken()));
  // For developers (and the page's tests): the state, and a way to drop the connection.
  return { state, drop: () => state.ws && state.ws.close(), redraw };
})();
window.rekindle = rekindle;
