"""Pure: bytes in, verified values or a ``FederationError`` out. No aiohttp, no sqlite3, no I/O."""
