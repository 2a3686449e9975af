vllm serve meta-llama/Llama-3.1-70B-Instruct --port 8100 --tensor-parallel-size 8 --gpu-memory-utilization 0.9 --max-num-seqs 256 --max-num-batched-tokens 8192 --block-size 16 --enable-prefix-caching
vllm serve meta-llama/Llama-3.1-70B-Instruct --port 8101 --tensor-parallel-size 8 --gpu-memory-utilization 0.9 --max-num-seqs 256 --max-num-batched-tokens 8192 --block-size 16 --enable-prefix-caching
