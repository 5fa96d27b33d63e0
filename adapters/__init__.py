"""tradetree: adapters."""
