"""tradetree: tradetree."""
