"""The client for vLLM: the HTTP transport, timeouts and errors, and the streaming relay."""
