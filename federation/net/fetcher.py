"""HTTP fetching for mirrors: bounded in time, size and concurrency.

Every failure to obtain bytes becomes a ``TransportError`` naming the URL;
what the bytes mean is checked elsewhere (``verify``).
"""
from __future__ import annotations

import asyncio

import aiohttp

from federation.core.errors import TransportError, UpstreamAuthError

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)


class Fetcher:
    """GETs resources under one or more tlog-tiles prefixes, tried in order."""

    def __init__(self, prefixes: list[str] | str, session: aiohttp.ClientSession | None = None,
                 concurrency: int = 8, headers: dict | None = None):
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        self.prefixes = [p.rstrip("/") + "/" for p in prefixes]
        self._own_session = session is None
        self._session = session
        self.headers = headers or {}
        self.semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency

    async def __aenter__(self) -> "Fetcher":
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=DEFAULT_TIMEOUT, headers={"User-Agent": "federation"})
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, max_bytes: int) -> bytes:
        """Fetch ``path`` from the first prefix that answers 200."""
        errors: list[TransportError] = []
        for prefix in self.prefixes:
            try:
                return await self._get_one(prefix + path, max_bytes)
            except TransportError as e:
                errors.append(e)
        # A refusal says what to fix (the token), so it names the whole failure.
        cls = UpstreamAuthError if any(isinstance(e, UpstreamAuthError) for e in errors) else TransportError
        raise cls("; ".join(map(str, errors)))

    def _refusal(self, url: str, status: int) -> str:
        if not any(k.lower() == "authorization" for k in self.headers):
            return (f"GET {url}: HTTP {status}: the upstream serves this feed to members only and no token was "
                    "sent; follow it with a member token ('federation follow --token-env VAR', or token_env in "
                    "the node config's [[follow]]) and set VAR")
        if status == 401:
            return f"GET {url}: HTTP 401: the upstream refused the member token sent (unknown or revoked)"
        return f"GET {url}: HTTP 403: the member token sent is not scoped to this feed"

    async def _get_one(self, url: str, max_bytes: int) -> bytes:
        if self._session is None:  # a caller's mistake, reported as the fetch failing
            raise TransportError(f"{url}: the fetcher is not open (use Fetcher as an async context manager)")
        async with self.semaphore:
            try:
                async with self._session.get(url, headers=self.headers) as resp:
                    if resp.status in (401, 403):
                        raise UpstreamAuthError(self._refusal(url, resp.status))
                    if resp.status != 200:
                        raise TransportError(f"GET {url}: HTTP {resp.status}")
                    # The bound is on the decoded body (docs/PROTOCOL.md section 2): a
                    # Content-Length counts the encoded one, which for a gzip'd tile of
                    # random hashes is *longer* than the tile. Only an unencoded length
                    # says in advance that the body is too big.
                    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
                    if not encoded and resp.content_length is not None and resp.content_length > max_bytes:
                        raise TransportError(f"GET {url}: response of {resp.content_length} bytes exceeds {max_bytes}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        body += chunk
                        if len(body) > max_bytes:
                            raise TransportError(f"GET {url}: response exceeds {max_bytes} bytes")
                    return bytes(body)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                raise TransportError(f"GET {url}: {type(e).__name__}: {e}") from e
