"""Mini-games (bargain, collect cards, flash sale, lottery, check-in): none is built yet.

Each game will plug into the operations seam in ``engine/``, never beside it:

- ``games/<game>/config.py``: its programme section (pydantic), cross-checked with the programme;
- ``games/<game>/rules.py``: pure rules (cut schedules, draws, payouts), seeded and property-tested;
- ``games/<game>/lua/*.lua``: the object's own script (a bargain, a campaign's budget, a sale's
  stock) under ``Keys.object(kind, id)``, holding the object's invariant, as
  ``engine/lua/catalog.lua`` does for a catalog item's stock;
- ``games/<game>/store.py``: object step first (recording what remains in its outbox), then
  member steps as ``MemberPlan``s with derived ids (``engine/operations.member_plan``: debits,
  limited counters, coupons, effects passed to the feed) through ``OperationStore``, settled or
  compensated as ``engine/redemptions.py`` does, with a sweep for what a crash left;
- time-driven steps as scheduler jobs (``engine/jobs.HANDLERS``);
- ``realtime/routes/<game>.py``: thin handlers, added where the app assembles its routes.

A game never writes member keys itself and never copies the member script.
"""
