"""Processes: the worker manager shielded and supervised, per-worker sockets, CPU pinning, signals."""
