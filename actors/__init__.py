"""tradetree: actors."""
