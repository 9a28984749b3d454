"""`healthbeat demo` and the sandbox harness it shares with the tests and the benchmarks."""
