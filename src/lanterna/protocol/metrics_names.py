"""vLLM Prometheus metric names (PROTOCOLS.md section 2), defined once.

The simulator exports them and the gateway's scraper reads them, so the two can never drift apart.
Counter constants are the *base* name: prometheus_client adds ``_total`` on exposition, and a scraper
must look for ``<name>_total``. Buckets are vLLM 0.32's, copied from a real ``/metrics`` capture.
"""

from __future__ import annotations

LABEL_MODEL_NAME = "model_name"
LABEL_ENGINE = "engine"
LABEL_FINISHED_REASON = "finished_reason"

# Gauges
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE_PERC = "vllm:kv_cache_usage_perc"
GPU_CACHE_USAGE_PERC_LEGACY = "vllm:gpu_cache_usage_perc"
CACHE_CONFIG_INFO = "vllm:cache_config_info"
LORA_REQUESTS_INFO = "vllm:lora_requests_info"

# Counters (base names; exposed with ``_total``)
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
NUM_PREEMPTIONS = "vllm:num_preemptions"
REQUEST_SUCCESS = "vllm:request_success"

# Histograms
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
TIME_PER_OUTPUT_TOKEN = "vllm:request_time_per_output_token_seconds"
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
REQUEST_INFERENCE_TIME = "vllm:request_inference_time_seconds"
REQUEST_PREFILL_TIME = "vllm:request_prefill_time_seconds"
REQUEST_DECODE_TIME = "vllm:request_decode_time_seconds"
REQUEST_PROMPT_TOKENS = "vllm:request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "vllm:request_generation_tokens"
ITERATION_TOKENS = "vllm:iteration_tokens_total"
REQUEST_PARAMS_MAX_TOKENS = "vllm:request_params_max_tokens"

# Ours: how far the simulator's step loop runs behind its schedule.
SIM_STEP_LAG = "lanterna_sim_step_lag_seconds"

# Buckets as vLLM 0.32 exports them (reference/vllm-0.32-cpu/metrics.txt).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                           60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_COUNT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
ITERATION_TOKEN_BUCKETS = (1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
                           8192.0, 16384.0)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")

# Gateway API Inference Extension EPP metrics the gateway exports (GAIE pkg/epp/metrics; labels
# model_name, target_model_name unless noted). Histograms/gauges: exact names; counters: base + ``_total``.
GAIE_NTPOT = "inference_objective_normalized_time_per_output_token_seconds"
GAIE_REQUEST_SIZES = "inference_objective_request_sizes"
GAIE_RESPONSE_SIZES = "inference_objective_response_sizes"
GAIE_PROMPT_CACHED_TOKENS = "inference_objective_prompt_cached_tokens"
GAIE_PLUGIN_DURATION = "inference_extension_plugin_duration_seconds"  # extension_point, plugin_type, plugin_name
GAIE_SCHEDULER_ATTEMPTS = "inference_extension_scheduler_attempts"  # status: success | failure

# llm-d KV-cache index metrics as the llm-d router's EPP exports them (unlabelled unless noted; the
# standalone llm-d-kv-cache library's older names are the same with ``kvcache_`` for ``llm_d_epp_kv_cache_``).
LLMD_KV_INDEX_ADMISSIONS = "llm_d_epp_kv_cache_index_admissions"
LLMD_KV_INDEX_EVICTIONS = "llm_d_epp_kv_cache_index_evictions"
LLMD_KV_INDEX_LOOKUP_REQUESTS = "llm_d_epp_kv_cache_index_lookup_requests"
LLMD_KV_INDEX_LOOKUP_HITS = "llm_d_epp_kv_cache_index_lookup_hits"
LLMD_KV_INDEX_MAX_POD_HIT_COUNT = "llm_d_epp_kv_cache_index_max_pod_hit_count"
LLMD_KV_EVENTS_MESSAGES_RECEIVED = "llm_d_epp_kv_cache_events_messages_received"  # pod_identifier
LLMD_KV_EVENTS_ACTIVE_SUBSCRIBERS = "llm_d_epp_kv_cache_events_active_subscribers"
