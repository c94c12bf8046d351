"""The soak run: ``python -m benchmarks.soak`` (``make soak``), and its client mix.

Repository tooling, not part of the ``zcasgi`` wheel and not part of ``make test``: it runs for
half an hour per backend. The client mix (:mod:`.clients`) also serves the bounded leak test in
the test suite (``tests/test_soak.py``). See ``docs/soak.md``.
"""
