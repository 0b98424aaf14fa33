"""Private daemons and host helpers for ukrun's demo, tests and benchmarks (not shipped)."""
