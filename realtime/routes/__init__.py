"""HTTP handlers, one module per resource; ``realtime/app.py`` assembles their routes in one place.

The rule a game's routes follow too, from its own package: a handler authenticates first, so an
unauthenticated caller learns nothing about members or programmes, then validates everything it
was sent before the first Redis call; it reads and answers through ``realtime/http.py``.
"""
