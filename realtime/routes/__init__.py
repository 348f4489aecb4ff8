"""HTTP handlers by resource; ``realtime/app.py`` assembles their routes in one place."""
