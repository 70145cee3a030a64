"""Who may make a request: API keys, the client IP behind trusted proxies, rate limits."""
