"""State shared by workers and instances: Redis, the machine's shared-memory tables and their hash."""
