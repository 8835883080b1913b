"""A faithful simulator of the k6 Cloud REST API v2 on loopback (demo, tests, benchmarks)."""
