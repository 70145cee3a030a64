"""
Redis beyond one server, for integration tests: a Redis Cluster, and a master watched by Sentinel.

Each group is started by the test on free ports with a temporary folder, waited for with bounded
polls until it serves, and stopped (every process, then the folder) by `stop()`. Only 127.0.0.1
is used. The `redis-server` and `redis-cli` of the machine are run (Redis 7.0 or later).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis, RedisError

from tests.procs import START_TIMEOUT_SECONDS, Process, free_port

T = TypeVar("T")
POLL_SECONDS = 0.05


def wait_until(what: str, check: Callable[[], T | None], timeout: float = START_TIMEOUT_SECONDS) -> T:
    """Poll `check` until it returns something other than None (or False); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (RedisError, OSError):
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s: {what}")
        time.sleep(POLL_SECONDS)


def _client(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def _info(port: int, section: str) -> dict[str, Any]:
    with _client(port) as client:
        return dict(client.info(section))


class _Server(Process):
    """One `redis-server` (or sentinel) on `port`, once it accepts connections."""

    def __init__(self, name: str, port: int, args: list[str], workdir: Path) -> None:
        self.port = port
        self.args, self.workdir = args, workdir  # for `restarted()`
        super().__init__(name, ["redis-server", *args], os.environ, cwd=workdir)
        wait_until(f"{name} accepts on port {port}", self._accepts)

    def _accepts(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.output()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as when its machine fails."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)

    def restarted(self) -> _Server:
        """The same server started again (on its port, with its files), once it accepts."""
        self.kill()
        return _Server(self.name, self.port, self.args, self.workdir)


def _data_server_args(port: int) -> list[str]:
    return ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--protected-mode", "no"]


class RedisClusterServers:
    """A Redis Cluster of `masters` masters and no replicas; `urls` names each node."""

    def __init__(self, masters: int = 3) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.nodes: list[_Server] = []
        try:
            for _ in range(masters):
                port = free_port()
                args = _data_server_args(port) + [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                    "--cluster-port", str(free_port()),  # the cluster bus (by default port + 10000)
                    "--dir", str(self.workdir),
                ]  # fmt: skip
                self.nodes.append(_Server(f"redis-cluster-{port}", port, args, self.workdir))
            create = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes)]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_SECONDS,
                check=False,
            )
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def wait_ok(self) -> None:
        for node in self.nodes:
            wait_until(f"node {node.port} says cluster_state:ok", lambda n=node: self._state(n.port) == "ok")

    def restart(self, index: int) -> None:
        """Start node `index` again (it rejoins from its nodes file) and wait until the cluster is ok."""
        self.nodes[index] = self.nodes[index].restarted()
        self.wait_ok()

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}/0" for node in self.nodes]

    @staticmethod
    def _state(port: int) -> str:
        with _client(port) as client:
            return str(client.execute_command("CLUSTER INFO")["cluster_state"])  # parsed by redis-py

    def node_for_slot(self, slot: int) -> int:
        """The port of the master that serves `slot`."""
        with _client(self.nodes[0].port) as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        for start, end, primary, *_ in ranges:
            if int(start) <= slot <= int(end):
                return int(primary[1])
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisSentinelGroup:
    """A master, one replica of it, and `sentinels` sentinels watching it as `name`.

    The sentinels judge the master down after one second without an answer, and two of them
    must agree, so that a failover takes a few seconds.
    """

    def __init__(self, name: str = "mymaster", sentinels: int = 3, quorum: int = 2) -> None:
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.sentinels: list[_Server] = []
        self.replica: _Server | None = None
        try:
            port = free_port()
            # The replica's first sync at once, not after Redis's 5 s wait for other replicas.
            args = _data_server_args(port) + ["--repl-diskless-sync-delay", "0"]
            self.master: _Server = _Server(f"redis-master-{port}", port, args, self.workdir)
            port = free_port()
            args = _data_server_args(port) + ["--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica = _Server(f"redis-replica-{port}", port, args, self.workdir)
            assert self.replica is not None
            wait_until(
                "the replica is in sync",
                lambda: _info(self.replica.port, "replication").get("master_link_status") == "up",
            )  # type: ignore[union-attr]
            # Each sentinel is told the others and the replica up front (sentinels otherwise find
            # them within seconds, through the master): a failover needs them all known.
            ports = [free_port() for _ in range(sentinels)]
            ids = [os.urandom(20).hex() for _ in ports]
            for port, own_id in zip(ports, ids, strict=True):
                config = self.workdir / f"sentinel-{port}.conf"
                known = "".join(
                    f"sentinel known-sentinel {name} 127.0.0.1 {other} {other_id}\n"
                    for other, other_id in zip(ports, ids, strict=True)
                    if other != port
                )
                config.write_text(
                    f"port {port}\n"
                    "bind 127.0.0.1\n"
                    "protected-mode no\n"
                    f"dir {self.workdir}\n"
                    f"sentinel myid {own_id}\n"
                    f"sentinel monitor {name} 127.0.0.1 {self.master.port} {quorum}\n"
                    f"sentinel down-after-milliseconds {name} 1000\n"
                    f"sentinel failover-timeout {name} 3000\n"
                    f"sentinel parallel-syncs {name} 1\n"
                    f"sentinel known-replica {name} 127.0.0.1 {self.replica.port}\n" + known
                )
                self.sentinels.append(
                    _Server(f"redis-sentinel-{port}", port, [str(config), "--sentinel"], self.workdir)
                )
            for sentinel in self.sentinels:
                wait_until(
                    f"sentinel {sentinel.port} knows the replica and the other sentinels",
                    lambda s=sentinel: self._ready(s.port, sentinels - 1),
                )
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> str:
        """The sentinels as REDIS_SENTINELS wants them."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def _ready(self, port: int, others: int) -> bool:
        with _client(port) as client:
            state = client.sentinel_master(self.name)
        return int(state["num-slaves"]) == 1 and int(state["num-other-sentinels"]) == others

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers says (None if none answers)."""
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port) as client:
                    _, port = client.sentinel_get_master_addr_by_name(self.name)
                return int(port)
            except (RedisError, OSError):
                continue
        return None

    def fail_master(self, timeout: float = 20.0) -> float:
        """Kill the master and wait for the sentinels to promote the replica; the seconds it took."""
        assert self.replica is not None
        started = time.monotonic()
        self.master.kill()
        wait_until(
            "the sentinels promote the replica",
            lambda: (
                self.master_port() == self.replica.port  # type: ignore[union-attr]
                and _info(self.replica.port, "replication").get("role") == "master"
            ),  # type: ignore[union-attr]
            timeout=timeout,
        )
        return time.monotonic() - started

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, getattr(self, "master", None)]:
            if server is not None:
                server.stop(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)
