"""Feature vectors of the latency predictor: what one endpoint's state and one request say about TTFT and TPOT.

Inputs (all already on hand when the scheduler runs; nothing is fetched):

- ``uncached``: prompt tokens the endpoint must prefill (prompt minus its prefix-cache match);
- ``queued``: the gateway's in-flight prefill tokens on the endpoint (``EndpointLoad``: exact, not scraped);
- ``seqs``: in-flight sequences there (they share every step with this request);
- ``kv_tokens``: in-flight KV tokens there (decode attention reads them every step);
- ``waiting`` / ``kv_usage``: the scraped ``num_waiting`` and KV-cache usage (stale by up to a scrape);
- ``prefix``: the cached share of the prompt (0..1);
- ``no_adapter``: 1 when the request names a LoRA adapter the endpoint is not running (a load is due).

Scales keep every feature near 1 so the regression is well conditioned: tokens in thousands, sequences in
sixteens, KV tokens in hundred-thousands. The first feature is the constant 1 (the intercept).
"""

from __future__ import annotations

TOKENS = 1e-3
SEQS = 1.0 / 16
KV_TOKENS = 1e-5

TTFT_FEATURES = ("bias", "uncached_ktok", "queued_ktok", "seqs_16", "work_x_seqs", "waiting", "kv_usage", "prefix",
                 "no_adapter")
TPOT_FEATURES = ("bias", "seqs_16", "kv_100ktok", "queued_ktok", "kv_usage", "waiting")


def ttft_features(uncached: float, queued: float, seqs: float, waiting: float, kv_usage: float, prefix: float,
                  no_adapter: float) -> tuple[float, ...]:
    """The TTFT law is work ahead (queued + own prefill) times a per-token cost that grows with batch size."""
    u, q, d = uncached * TOKENS, queued * TOKENS, seqs * SEQS
    return 1.0, u, q, d, (u + q) * d, waiting, kv_usage, prefix, no_adapter


def tpot_features(seqs: float, kv_tokens: float, queued: float, kv_usage: float, waiting: float) -> tuple[float, ...]:
    """The TPOT law is one decode step: fixed cost + batch rows + KV read + prefill chunks riding along."""
    return 1.0, (seqs + 1) * SEQS, kv_tokens * KV_TOKENS, queued * TOKENS, kv_usage, waiting
