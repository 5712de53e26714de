"""Helpers shared by the test suites: processes, clusters, fixtures, payloads."""
