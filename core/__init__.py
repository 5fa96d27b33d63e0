"""Shared domain: types, errors, configuration, clocks and the Redis store."""

# The folder sits at the repository root but installs as tradetree.core; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.core":
    raise ImportError(f"import tradetree.core, not {__name__}")
