"""A node's home, key files, config and assembly."""
