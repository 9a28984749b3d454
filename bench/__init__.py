"""Healthbeat's benchmark suite (issue 8): `python -m bench.run --scale small|medium|full`.

Every figure is a ratio against a baseline measured in the same run, because the machines here are noisy.
`bench.generate` makes the data deterministically (into the sandboxes for sync, straight into a store for
scoring), `bench.server` runs the sandboxes in a child process so the worker's own CPU and memory can be
measured alone, `bench.measure` holds the timers, `bench.scenarios` the six goals (P1-P6), and
`bench.report` writes BENCHMARKS.md. See bench/README.md.
"""
