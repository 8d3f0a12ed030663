"""HTTP: the read side, the publishing API, access control, fetching, long-poll, static export."""
