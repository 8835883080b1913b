"""A faithful simulator of the k6 Cloud REST API v2 on loopback, for the demo, tests and benchmarks."""
