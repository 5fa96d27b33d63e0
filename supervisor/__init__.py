"""tradetree: supervisor."""
