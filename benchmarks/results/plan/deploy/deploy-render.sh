lanterna deploy render --model meta-llama/Llama-3.1-70B-Instruct --vllm-replicas 2
# each vLLM pod: 8 GPUs and `--tensor-parallel-size 8` (not render flags yet)
