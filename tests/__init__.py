"""The test suite; a package so tests can share helpers (tests.harvest_helpers)."""
