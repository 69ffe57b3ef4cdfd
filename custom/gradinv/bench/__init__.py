"""Benchmark harnesses: a front-end of the attack core, run by ``gradinv bench-case`` and the ``bench/`` scripts.

- :mod:`gradinv.bench.case`: the attack-speed harness (one attack iteration against one local-training pass and
  a reference-style loop with the same math, for one client configuration).
"""
