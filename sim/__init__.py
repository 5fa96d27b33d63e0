"""tradetree: sim."""
