"""The notification delivery process (runtime/delivery.py): with an endpoint enabled and more than one worker, the
master starts one more child whose only job is delivery, at a lower CPU priority (`notifications.delivery.nice`);
the workers only record. It is restarted like a worker when it dies, and every event still arrives exactly once,
in order; a worker's death does not touch it; its counts reach the one scrape of the debug listener."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from notification_receiver import Receiver
from postgres_cluster import PostgresCluster
from test_notifications import _push_images, _wait_for, _wait_gone, _worker_pids, notifying, summary
from test_server_observability import scrape, total

from registry_api import get_manifest, unique_repo
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the process layout of docker-registry 3")

READY = re.compile(r"notification delivery process ready \(pid (\d+), nice (-?\d+)\)")
DELIVERS = re.compile(r"\[(\d+)\] \S+ notifications: this process delivers events")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def _delivery_processes(server: RegistryProcess) -> list[int]:
    """The pids of every delivery process the registry started so far, in order."""
    return [int(pid) for pid, _ in READY.findall(server.log_path.read_text())]


def _wait_delivery_process(server: RegistryProcess, count: int = 1) -> int:
    """The pid of the registry's `count`th delivery process, once it said it is ready."""
    _wait_for(lambda: len(_delivery_processes(server)) >= count)
    return _delivery_processes(server)[count - 1]


def _wait_cursor_stored(database_url: str) -> None:
    """Until the endpoint's stored cursor has passed every event: only then has a SIGKILL nothing to send again
    (delivery is exactly once in normal operation and at least once across a crash between an endpoint's answer
    and the cursor's write, `notifications.delivery`)."""
    engine = sa.create_engine(database_url)
    try:

        def stored() -> bool:
            with engine.connect() as conn:
                newest = conn.execute(sa.text("SELECT max(id) FROM events")).scalar()
                position = conn.execute(sa.text("SELECT min(position) FROM event_cursors")).scalar()
            return newest is not None and position is not None and position >= newest

        _wait_for(stored)
    finally:
        engine.dispose()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _deliverers(server: RegistryProcess) -> list[int]:
    """The processes that took the delivery lease, in order."""
    return [int(pid) for pid in DELIVERS.findall(server.log_path.read_text())]


def test_the_delivery_process_runs_niced_beside_the_workers_only_while_an_endpoint_is_enabled(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    config = notifying(receiver)
    config["notifications"]["delivery"] = {"nice": 7}
    server = make_registry(extra_config=config, workers=2)
    assert server.proc is not None
    master = server.proc.pid
    delivery = _wait_delivery_process(server)
    _wait_for(lambda: len(_worker_pids(server)) == 2)
    assert _children(master) == {delivery, *_worker_pids(server)}
    base = os.getpriority(os.PRIO_PROCESS, master)
    assert os.getpriority(os.PRIO_PROCESS, delivery) == min(base + 7, 19)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in _worker_pids(server)] == [base, base]
    changes = _push_images(server, unique_repo("niced"), 2)
    receiver.wait_for(lambda got: len(got) >= len(changes))
    assert [(a, d, t) for a, _, d, t in summary(receiver.events)] == changes
    assert _deliverers(server) == [delivery], "the delivery process delivers, no worker"
    server.stop()  # SIGTERM: it stops with the workers, giving the lease up
    assert f"notification delivery process (pid {delivery}) stopped" in server.log_path.read_text()
    _wait_gone(delivery)

    disabled = notifying(receiver)
    disabled["notifications"]["endpoints"][0]["disabled"] = True
    quiet = make_registry(extra_config=disabled, workers=2)
    assert quiet.proc is not None
    _wait_for(lambda: len(_worker_pids(quiet)) == 2)
    time.sleep(1)
    assert _children(quiet.proc.pid) == set(_worker_pids(quiet)), "no endpoint enabled, no delivery process"
    assert _delivery_processes(quiet) == []


def test_one_worker_in_process_delivers_itself(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = make_registry(extra_config=notifying(receiver), workers=1)
    assert server.proc is not None
    changes = _push_images(server, unique_repo("in-process"), 2)
    receiver.wait_for(lambda got: len(got) >= len(changes))
    assert [(a, d, t) for a, _, d, t in summary(receiver.events)] == changes
    assert _deliverers(server) == [server.proc.pid]
    assert _delivery_processes(server) == []
    assert _children(server.proc.pid) == set()


def test_a_killed_delivery_process_is_restarted_and_every_event_arrives_once_in_order(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = make_registry(extra_config=notifying(receiver, batch=3), workers=2)
    repo = unique_repo("delivery-killed")
    first = _wait_delivery_process(server)
    changes = _push_images(server, repo, 2)
    receiver.wait_for(lambda got: len(got) >= len(changes))
    with httpx.Client(base_url=server.url, timeout=30) as client:  # a pull event too, batched by its worker
        assert get_manifest(client, repo, "t0").status_code == 200
    changes.append(("pull", changes[2][1], "t0"))
    receiver.wait_for(lambda got: len(got) >= len(changes))
    _wait_cursor_stored(f"sqlite:///{server.data_dir / 'registry.db'}")
    receiver.limit = len(receiver.deliveries)  # the receiver goes down: the next events wait in the outbox
    changes += _push_images(server, repo, 3)
    _wait_for(lambda: receiver.attempts > receiver.limit)  # the delivery process is trying them
    os.kill(first, signal.SIGKILL)
    _wait_gone(first)
    second = _wait_delivery_process(server, 2)
    assert second != first
    changes += _push_images(server, repo, 1)
    receiver.limit = None  # back up
    receiver.wait_for(lambda got: len(got) >= len(changes), timeout=60)
    time.sleep(2)  # nothing more comes: no event twice
    events = receiver.events
    assert [(a, d, t) for a, _, d, t in summary(events)] == changes
    assert len({e["id"] for e in events}) == len(events)
    log = server.log_path.read_text()
    assert f"notification delivery process (pid {first}) was killed by SIGKILL" in log
    assert _deliverers(server) == [first, second]


def test_a_killed_worker_leaves_delivery_alone(
    make_registry: Callable[..., RegistryProcess], receiver: Receiver
) -> None:
    server = make_registry(extra_config=notifying(receiver), workers=2)
    repo = unique_repo("worker-killed")
    delivery = _wait_delivery_process(server)
    _wait_for(lambda: len(_worker_pids(server)) == 2)
    changes = _push_images(server, repo, 2)
    receiver.wait_for(lambda got: len(got) >= len(changes))
    victim = _worker_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    _wait_gone(victim)
    _wait_for(lambda: len(_worker_pids(server)) == 3)  # its replacement is ready
    changes += _push_images(server, repo, 3)
    receiver.wait_for(lambda got: len(got) >= len(changes))
    time.sleep(1.5)
    events = receiver.events
    assert [(a, d, t) for a, _, d, t in summary(events)] == changes
    assert len({e["id"] for e in events}) == len(events)
    os.kill(delivery, 0)  # still the same process
    assert _delivery_processes(server) == [delivery]
    assert _deliverers(server) == [delivery], "the lease never moved"


def test_one_scrape_shows_deliveries_across_a_restart_of_the_delivery_process(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    receiver = Receiver(limit=0).start()  # down: every delivery answered 503
    try:
        debug_port = free_port()
        metrics = {"http": {"debug": {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}}}
        config = notifying(receiver, threshold=1, backoff="100ms")
        server = make_registry(extra_config={**metrics, **config}, workers=2)
        first = _wait_delivery_process(server)
        changes = _push_images(server, unique_repo("metrics"), 2)

        def pending_and_failed() -> bool:
            samples = scrape(debug_port)
            failures = total(samples, "registry_notifications_failures_total", endpoint="test")
            return total(samples, "registry_notifications_pending_events", endpoint="test") >= 1 and failures >= 1

        # as of the batch it keeps retrying; its failures shown too: the pending figure is set before the first POST,
        # so a flush between the two shows it alone, and a process killed then never flushes its first failure
        _wait_for(pending_and_failed)
        os.kill(first, signal.SIGKILL)
        _wait_gone(first)
        _wait_delivery_process(server, 2)
        receiver.limit = None
        receiver.wait_for(lambda got: len(got) >= len(changes))
        delivered = len(changes)
        _wait_for(lambda: total(scrape(debug_port), "registry_notifications_delivered_total") == delivered)
        time.sleep(1.5)  # a flush more
        samples = scrape(debug_port)
        assert total(samples, "registry_notifications_delivered_total", endpoint="test") == delivered
        assert total(samples, "registry_notifications_failures_total", endpoint="test") >= 1  # the dead one's too
        assert total(samples, "registry_notifications_pending_events", endpoint="test") == 0  # its figure left too
    finally:
        receiver.stop()


def test_nodes_on_postgresql_have_a_delivery_process_each_and_one_delivers(
    tmp_path: Path, postgres_cluster: PostgresCluster, receiver: Receiver
) -> None:
    """Two nodes over one PostgreSQL database: each starts its own delivery process, the lease lets one of them
    deliver; when that one is killed, the registry delivers on (its successor or the other node's), exactly once."""
    url = postgres_cluster.new_database()
    database = {"database": {"url": url}}
    storage = {"filesystem": {"rootdirectory": str(tmp_path / "shared")}, "delete": {"enabled": True}}
    nodes = [
        RegistryProcess(
            tmp_path / f"node{i}", workers=2, storage=storage, extra_config={**database, **notifying(receiver)}
        )
        for i in range(2)
    ]
    try:
        for node in nodes:
            node.start()
        processes = [_wait_delivery_process(node) for node in nodes]
        repo = unique_repo("nodes")
        changes = _push_images(nodes[0], repo, 2) + _push_images(nodes[1], repo, 2)
        receiver.wait_for(lambda got: len(got) >= len(changes))
        holders = [pid for node in nodes for pid in _deliverers(node)]
        assert len(holders) == 1, holders
        assert holders[0] in processes, (holders, processes)
        _wait_cursor_stored(url)
        os.kill(holders[0], signal.SIGKILL)
        _wait_gone(holders[0])
        changes += _push_images(nodes[1], repo, 1) + _push_images(nodes[0], repo, 1)
        receiver.wait_for(lambda got: len(got) >= len(changes), timeout=60)
        time.sleep(2)
        events = receiver.events
        assert [(a, d, t) for a, _, d, t in summary(events)] == changes
        assert len({e["id"] for e in events}) == len(events)
    finally:
        for node in nodes:
            node.stop()
