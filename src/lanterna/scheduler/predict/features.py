"""Feature vectors of the latency predictor: what one endpoint's state and one request say about TTFT and TPOT.

Inputs (all already on hand when the scheduler runs; nothing is fetched):

- ``uncached``: prompt tokens the endpoint must prefill (prompt minus its prefix-cache match);
- ``queued``: the gateway's in-flight prefill tokens on the endpoint (``EndpointLoad``: exact, not scraped);
- ``seqs``: in-flight sequences there (they share every step with this request);
- ``kv_tokens``: in-flight KV tokens there (decode attention reads them every step);
- ``waiting`` / ``kv_usage``: the scraped ``num_waiting`` and KV-cache usage (stale by up to a scrape);
- ``prefix``: the cached share of the prompt (0..1);
- ``no_adapter``: 1 when the request names a LoRA adapter the endpoint is not running (a load is due);
- ``over_seats``: in-flight sequences beyond the server's seat limit (``max_num_seqs``), this one included:
  those wait for a running sequence to finish, a cliff no linear term in ``seqs`` can draw (without it the
  model kept predicting sub-second TTFT for a replica 50 requests past its seats, and fed it more).

Scales keep every feature near 1 so the regression is well conditioned: tokens in thousands, sequences in
sixteens, KV tokens in hundred-thousands. The first feature is the constant 1 (the intercept).
"""

from __future__ import annotations

TOKENS = 1e-3
SEQS = 1.0 / 16
KV_TOKENS = 1e-5

TTFT_FEATURES = ("bias", "uncached_ktok", "queued_ktok", "seqs_16", "work_x_seqs", "waiting", "kv_usage", "prefix",
                 "no_adapter", "over_seats_16")
TPOT_FEATURES = ("bias", "seqs_16", "kv_100ktok", "queued_ktok", "kv_usage", "waiting")
# NOTE: load features never lower a prediction: their weights are clamped at >= 0 when predicting. Load features
# are collinear (sequences, queued tokens, waiting, KV use rise together); unconstrained, one of them learned a
# negative weight, the busiest replica then looked fastest and got every request (4:1 at 48 QPS: 532 of 1,439
# requests on one of 6 replicas, P90 TTFT 150 s). Bias and prefix share stay free.
TTFT_NONNEG = (1, 2, 3, 4, 5, 6, 8, 9)
TPOT_NONNEG = (1, 2, 3, 4, 5)


def ttft_features(uncached: float, queued: float, seqs: float, waiting: float, kv_usage: float, prefix: float,
                  no_adapter: float, max_seqs: float = 256) -> tuple[float, ...]:
    """The TTFT law is work ahead (queued + own prefill) times a per-token cost that grows with batch size,
    plus a wait for a seat once the server's sequences are all taken."""
    u, q, d = uncached * TOKENS, queued * TOKENS, seqs * SEQS
    over = seqs + 1 - max_seqs
    return 1.0, u, q, d, (u + q) * d, waiting, kv_usage, prefix, no_adapter, (over if over > 0 else 0.0) * SEQS


def tpot_features(seqs: float, kv_tokens: float, queued: float, kv_usage: float, waiting: float) -> tuple[float, ...]:
    """The TPOT law is one decode step: fixed cost + batch rows + KV read + prefill chunks riding along."""
    return 1.0, (seqs + 1) * SEQS, kv_tokens * KV_TOKENS, queued * TOKENS, kv_usage, waiting
