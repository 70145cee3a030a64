"""Which route and which replica serve a request: the router, replicas with ejection and failover, the models cache."""
