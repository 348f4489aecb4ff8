"""Mini-games: each a package here, found by the engine through one line of pyproject.toml.

A game declares what it adds in one ``engine.plugins.Game`` (its ``GAME``) and plugs into the
operations seam in ``engine/``, never beside it:

- ``games/<game>/config.py``: its programme section ``[games.<game>]`` (pydantic), cross-checked
  with the programme (``rekindle check``, the JSON Schema and docs/programme.md include it);
- ``games/<game>/rules.py``: pure rules (cut schedules, draws, payouts), seeded, property-tested;
- ``games/<game>/plans.py``: the member operations its steps are (``member_plan``: grants,
  debits, inventory, streaks, effects passed to the feed), applied through ``member.lua``;
- ``games/<game>/lua/*.lua``: an object's script (a sale's stock, a wheel's budget, a bargain)
  under ``Keys.object(kind, id)``, with ``engine/lua/object.lua`` before it; its steps cross
  slots through ``engine/crossing.py`` (intent, object step, member steps, settle or release,
  compensation, the scheduler's sweep), as the catalog's redemption does;
- ``games/<game>/routes.py``: its routes as data (``engine.plugins.Route``); the service serves,
  authenticates, admits and documents them in one place (``realtime/routes/games.py``).

A game never writes member keys itself, never copies the member script, never sweeps on its own.
Installed: ``checkin`` (daily check-in with streaks).
"""
