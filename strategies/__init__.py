"""tradetree: strategies."""
