"""The fake vLLM server's parts; scripts/fake_vllm.py starts it."""
