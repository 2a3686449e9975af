"""Tokenizer hot path: encode, batch encode, chat encode and streaming detokenization of the default tokenizer.

The gateway tokenizes every request for precise prefix routing, so encode cost per request matters. Prints
figures and ratios; asserts nothing. Run: ``.venv/bin/python benchmarks/tokenizer.py``.
"""

from __future__ import annotations

import random
import time

from lanterna.models.tokenizer import load_tokenizer


def _timeit(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def main() -> None:
    tok = load_tokenizer(None)
    rng = random.Random(0)
    words = [tok.decode([i]) for i in range(100, 8000, 7)]
    short = " ".join(rng.choice(words) for _ in range(100))
    long = " ".join(rng.choice(words) for _ in range(2000))
    batch = [" ".join(rng.choice(words) for _ in range(200)) for _ in range(64)]
    msgs = [{"role": "system", "content": short}, {"role": "user", "content": long}]
    n_short, n_long = len(tok.encode(short)), len(tok.encode(long))

    t_short = _timeit(lambda: tok.encode(short), 200)
    t_long = _timeit(lambda: tok.encode(long), 20)
    t_loop = _timeit(lambda: [tok.encode(t) for t in batch], 5)
    t_batch = _timeit(lambda: tok.encode_batch(batch), 5)
    t_chat = _timeit(lambda: tok.encode_chat(msgs), 20)
    ids = tok.encode(long, add_special_tokens=False)

    def stream() -> None:
        det = tok.detokenizer()
        for i in ids:
            det.push([i])
        det.flush()

    t_detok = _timeit(stream, 3)
    print(f"encode short ({n_short} tok):   {t_short * 1e6:8.1f} us  ({n_short / t_short / 1e6:.2f} M tok/s)")
    print(f"encode long  ({n_long} tok):  {t_long * 1e6:8.1f} us  ({n_long / t_long / 1e6:.2f} M tok/s)")
    print(f"64 prompts, loop:        {t_loop * 1e3:8.2f} ms")
    print(f"64 prompts, encode_batch:{t_batch * 1e3:8.2f} ms  (batch speedup x{t_loop / t_batch:.2f})")
    print(f"chat template + encode:  {t_chat * 1e6:8.1f} us  (template overhead x{t_chat / t_long:.2f} vs encode)")
    print(f"stream detokenize:       {t_detok / len(ids) * 1e6:8.2f} us/token ({len(ids)} tokens)")


if __name__ == "__main__":
    main()
