"""Tests of the pure statistics (service.analysis.stats and power): plain
numbers in, numbers out, checked against independent references. No
database; the SQL aggregation is tested in tests/service."""
