"""Run by real vLLM's interpreter: feed our generated offload flags through vLLM's own parsing.

argv: model dir, then one JSON list of flag lists. For each: vLLM's CLI parser -> ``EngineArgs`` ->
``create_engine_config()`` (the full ``VllmConfig`` validation), then the offloading spec class vLLM
resolves from ``kv_connector_extra_config``, its metric definitions (which resolve each secondary tier's
class) and each tier constructor's signature bound to our tier keys. Prints one JSON line per case.
"""

from __future__ import annotations

import inspect
import json
import sys


def check(model: str, flags: list[str]) -> dict[str, object]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.kv_offload.factory import OffloadingSpecFactory

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    ns = parser.parse_args(["--model", model, "--block-size", "32", "--max-model-len", "2048",
                            "--dtype", "float32", "--enforce-eager", "--enable-prefix-caching", *flags])
    cfg = EngineArgs.from_cli_args(ns).create_engine_config()
    kv = cfg.kv_transfer_config
    assert kv is not None
    extra = dict(kv.kv_connector_extra_config)
    spec_cls = OffloadingSpecFactory.get_spec_cls(extra)
    spec_cls.build_metric_definitions(extra)
    tiers = []
    for tier in extra.get("secondary_tiers", []):
        from vllm.v1.kv_offload.tiering.factory import SecondaryTierFactory

        tier_cls = SecondaryTierFactory.get_tier_class(tier)
        params = {k: v for k, v in tier.items() if k != "type"}
        inspect.signature(tier_cls.__init__).bind_partial(None, **params)  # TypeError on an unknown key
        tiers.append(tier_cls.__name__)
    return {"connector": kv.kv_connector, "role": kv.kv_role, "spec": spec_cls.__name__, "tiers": tiers,
            "extra": extra}


def main() -> None:
    model, cases = sys.argv[1], json.loads(sys.argv[2])
    for flags in cases:
        try:
            out = check(model, flags)
        except Exception as exc:  # reported, so a test can also show that bad flags are rejected
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
