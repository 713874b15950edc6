"""Starting a system: which database, its schema, its first keys."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Collection
from pathlib import Path

from core.adapters.postgres.database import reset_database
from core.adapters.postgres.embedded import (
    LOGICAL_REPLICATION,
    disown_after_fork,
    revive,
    start_embedded,
    stop_embedded,
)
from core.adapters.postgres.migrate import upgrade_to_head
from core.config import Settings, settings
from core.services import api_keys

log = logging.getLogger(__name__)

DEV_KEY_NAME = "dev-admin (created by abaxus dev)"


def database_url(config: Settings) -> str:
    """DATABASE_URL if set, otherwise the embedded server under ABAXUS_DATA_DIR."""
    if config.database_url:
        return config.database_url
    return start_embedded(config.abaxus_data_dir)


def start_replicating_database(data_dir: Path) -> str:
    """An embedded server under `data_dir` that can publish and subscribe (wal_level
    logical): one per region and one central in `abaxus dev --regions`."""
    return start_embedded(data_dir, extra_settings=LOGICAL_REPLICATION)


def stop_replicating_database(data_dir: Path) -> None:
    stop_embedded(data_dir)


EMBEDDED_WATCH_SECONDS = 2.0


def watch_embedded(data_dir: Path, stop: threading.Event) -> threading.Thread:
    """A thread of the dev server's main process that starts the embedded server again
    within seconds if it dies; requests meanwhile answer 503 and the workers' pools
    reconnect by themselves (docs/operations.md, "When PostgreSQL goes away")."""

    def watch() -> None:
        while not stop.wait(EMBEDDED_WATCH_SECONDS):
            try:
                revive(data_dir)
            except Exception:  # keep watching: the next round tries again
                log.exception("could not start the embedded postgres again")

    thread = threading.Thread(target=watch, name="embedded-postgres-watch", daemon=True)
    thread.start()
    return thread


def migrate(url: str) -> str:
    revision = upgrade_to_head(url)
    log.info("schema at head", extra={"revision": revision})
    return revision


def ensure_bootstrap_key(config: Settings) -> bool:
    """ABAXUS_BOOTSTRAP_KEY, when set, exists as an admin key; True if it is set. A region
    creates no key: its keys replicate from its central (a key made in both would stop
    the replication of the catalog)."""
    if not config.abaxus_bootstrap_key or config.abaxus_role == "region":
        return False
    api_keys.ensure_key(config.abaxus_bootstrap_key, name="bootstrap", scopes=["admin"])
    return True


def create_dev_key() -> api_keys.CreatedKey | None:
    """An admin key on a system that has none (first start of `abaxus dev`); none in a
    region (its keys are its central's)."""
    if settings().abaxus_role == "region":
        return None
    return api_keys.create_first_admin_key(DEV_KEY_NAME)


def freeze_heap() -> None:
    """Leave every object alive now (modules, classes, Flask, SQLAlchemy, the schemas: about
    250,000 of them once the functions are imported) out of the garbage collector's scans.

    A serving process allocates fast, so full collections come every several seconds, and each
    walked all of them: measured under the single-event load, 180-230 ms per collection
    with every request of the worker stopped (0.43 s of one worker's CPU in a 12 s run;
    with the objects frozen, 3.5 ms). What is frozen is never collected, so this runs
    after start-up, before serving (and before forking, so that workers share the pages)."""
    gc.freeze()


_ROLE_LOOPS: list[threading.Event] = []


def start_role_loops(targets: Collection[str]) -> None:
    """In a serving process, once: a region's ingest writes the heartbeat; a central's
    aggregator folds replicated events as they arrive (API.md §10). Nothing in `all`."""
    if _ROLE_LOOPS:
        return
    from core.services import aggregation, regions  # noqa: PLC0415 - the roles' own

    config = settings()
    stop = threading.Event()
    if config.abaxus_role == "region" and "ingest" in targets:
        regions.run_heartbeats(stop)
        _ROLE_LOOPS.append(stop)
    if config.abaxus_role == "central" and "aggregate" in targets:
        regions.follow_arrivals(stop, aggregation.drain)
        _ROLE_LOOPS.append(stop)


def stop_role_loops() -> None:
    for stop in _ROLE_LOOPS:
        stop.set()
    _ROLE_LOOPS.clear()


def after_fork() -> None:
    """In a worker process: no inherited connections, no inherited server ownership, and
    what the worker's start-up created frozen too (`freeze_heap`)."""
    reset_database()
    disown_after_fork()
    freeze_heap()


def release_connections() -> None:
    """Close this process's pool (before forking workers, or when switching databases)."""
    reset_database()
