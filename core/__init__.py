"""Shared domain: types, errors, configuration, clocks and the Redis store."""
