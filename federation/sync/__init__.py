"""A mirror's sync: fetch, accept through the core, apply through the mirror store."""
