"""Shared test factories: a daemon configuration on a test broker, and the child processes of
a process (read from /proc)."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config, KafkaConfig, MetricsConfig, StoreConfig


def broker_config(bootstrap: str, topic: str, group: str, member: str, state: Path) -> Config:
    """A daemon configuration for a test broker: the test timeouts of kafka-python 3, a store
    in `state` and metrics on a free port."""
    kafka = KafkaConfig(
        bootstrap_servers=(bootstrap,),
        topic=topic,
        group_id=group,
        group_instance_id=member,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=500,
    )
    return Config(
        kafka=kafka,
        store=StoreConfig(path=str(state / "regimed.db")),
        metrics=MetricsConfig(port=0),
    )


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a daemon's writer and helper processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found
