"""The parts of ``make bench-live`` (``python -m loadtest.bench_live``), one job a module.

- ``options``: the targets and the command line;
- ``orchestrate``: the run, side by side: the service's and the baseline's processes, in order;
- ``report``: the table and the verdict;
- ``subscriber`` (a process of its own): N WebSocket clients (``wsclient``), every frame
  recorded (``recorder``);
- ``poster`` (a process of its own): awards at a fixed rate, straight into Valkey;
- ``stamps``: the id each pushed frame carries; ``pipe``: how a child talks to the parent.

The baseline server is ``loadtest/live_baseline.py``; processes, percentiles and the RESP
encoder are shared with ``make bench`` (``loadtest.processes``, ``loadtest.stats``, hiredis).
"""
