"""``POST /tokenize`` on a model server as the tokenizer (adapter; used when no local tokenizer exists)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


def http_tokenize(
    session: aiohttp.ClientSession, base_url_for: Callable[[str], str | None], timeout_s: float = 2.0
) -> Callable[[str, dict[str, Any]], Coroutine[Any, Any, list[int] | None]]:
    """Build a ``remote`` callable for ``TokenizerPool``; ``base_url_for(model)`` picks a server."""

    async def call(model: str, body: dict[str, Any]) -> list[int] | None:
        base = base_url_for(model)
        if base is None:
            return None
        try:
            async with session.post(
                base + "/tokenize", json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("remote_tokenize_failed", extra={"model": model, "error": str(exc)})
            return None
        toks = data.get("tokens") if isinstance(data, dict) else None
        return toks if isinstance(toks, list) else None

    return call
