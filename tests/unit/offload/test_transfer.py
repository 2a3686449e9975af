"""Batched block copies device <-> host on CPU tensors (CI has no GPU; CUDA takes the same code path plus
streams). Skips when torch is absent; ``make test`` runs it with the vLLM venv's torch."""

from __future__ import annotations

import os

import pytest

if os.environ.get("LANTERNA_REQUIRE_TORCH") == "1":  # `make test` runs this with the vLLM venv: never skip there
    import torch
else:
    torch = pytest.importorskip("torch")

from lanterna.offload.transfer import BlockTransfer, _contiguous_run, host_pool  # noqa: E402

SHAPE = (2, 16, 4, 8)  # (k/v, tokens per block, heads, head dim)


def layers(num_dev: int = 40, num_host: int = 64, n: int = 3, dtype: torch.dtype = torch.float16):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        dev = torch.randn((num_dev, *SHAPE), generator=g).to(dtype)
        out.append((dev, host_pool(dev, num_host).zero_()))
    return out


@pytest.mark.parametrize("host_ids", [[10, 11, 12, 13, 14], [50, 3, 27, 8, 61]], ids=["contiguous", "scattered"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_round_trip(host_ids: list[int], dtype: torch.dtype) -> None:
    ls = layers(dtype=dtype)
    dev_ids = [39, 0, 17, 5, 22]
    orig = [d.clone() for d, _ in ls]
    bt = BlockTransfer(ls, max_blocks=2)  # forces 3 chunks
    h = bt.to_host(dev_ids, host_ids)
    h.wait()
    assert h.done()
    for (dev, host), o in zip(ls, orig, strict=True):
        assert torch.equal(host[host_ids], o[dev_ids])
        dev.zero_()
    back = [1, 2, 30, 31, 9]
    bt.to_device(host_ids, back).wait()
    for (dev, _), o in zip(ls, orig, strict=True):
        assert torch.equal(dev[back], o[dev_ids])
        untouched = [i for i in range(dev.shape[0]) if i not in back]
        assert not dev[untouched].any()


def test_many_scattered_blocks_one_call() -> None:
    ls = layers(num_dev=500, num_host=800, n=2)
    g = torch.Generator().manual_seed(1)
    dev_ids = torch.randperm(500, generator=g)[:300]
    host_ids = torch.randperm(800, generator=g)[:300]
    BlockTransfer(ls, max_blocks=128).to_host(dev_ids, host_ids).wait()
    for dev, host in ls:
        assert torch.equal(host[host_ids], dev[dev_ids])


def test_contiguous_run_detection() -> None:
    assert _contiguous_run(torch.tensor([4, 5, 6])) == 4
    assert _contiguous_run(torch.tensor([9])) == 9
    assert _contiguous_run(torch.tensor([4, 6, 5])) is None
    assert _contiguous_run(torch.tensor([], dtype=torch.long)) is None


def test_mismatches_rejected() -> None:
    dev = torch.zeros((4, *SHAPE))
    with pytest.raises(ValueError):
        BlockTransfer([(dev, torch.zeros((4, 3)))])
    with pytest.raises(ValueError):
        BlockTransfer([(dev, torch.zeros((4, *SHAPE)))]).to_host([0, 1], [0])


def test_host_pool_rows_feed_the_file_tier(tmp_path) -> None:
    """Host pool rows go to files and back without a staging copy (memoryviews of the pool)."""
    from lanterna.offload.file_tier import FileTier
    from lanterna.offload.layout import StorageLayout

    ls = layers(n=2, dtype=torch.bfloat16)
    BlockTransfer(ls).to_host([3, 4, 5], [0, 1, 2]).wait()

    def block(i: int) -> list[memoryview]:
        return [memoryview(host[i].view(torch.uint8).numpy()).cast("B") for _, host in ls]

    tier = FileTier(StorageLayout(str(tmp_path), "m", 16, "bfloat16"), threads=2)
    hashes = [bytes([i]) * 32 for i in range(3)]
    assert tier.store(hashes, [block(i) for i in range(3)]) == [True] * 3
    expect = [host[:3].clone() for _, host in ls]
    for _, host in ls:
        host.zero_()
    assert tier.load(hashes, [block(i) for i in (0, 1, 2)]) == [True] * 3
    assert all(torch.equal(host[:3], e) for (_, host), e in zip(ls, expect, strict=True))
    tier.close()
