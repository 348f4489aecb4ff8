"""The member-day rehearsal kit on Locust: users (``users.py``), load shapes and thresholds
(``kit.py``, from ``loadtest/memberday.toml``), the locustfile Locust loads (``locustfile.py``),
and ``rehearse.py``, which ``make loadtest`` runs: a service on the embedded Valkey (or
``--host``), a bounded headless Locust run with CSV and HTML reports, then the verifier."""
