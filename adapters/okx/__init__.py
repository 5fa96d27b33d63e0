"""tradetree: adapters/okx."""
