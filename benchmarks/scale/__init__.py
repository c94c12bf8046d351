"""The scale run (``make bench-scale``): many idle connections over zcasgi's worker processes."""
