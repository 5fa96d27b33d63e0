"""tradetree: actors."""

# The folder sits at the repository root but installs as tradetree.actors; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.actors":
    raise ImportError(f"import tradetree.actors, not {__name__}")
