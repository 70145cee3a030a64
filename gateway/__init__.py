"""A high-throughput HTTP gateway in front of vLLM's OpenAI-compatible servers."""

__version__ = "0.1.0"
