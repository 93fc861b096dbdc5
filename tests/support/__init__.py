"""Helpers of the test suite (the test server, process drivers)."""
