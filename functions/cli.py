"""`abaxus`: the command line.

abaxus dev                      the whole system on one port (embedded PostgreSQL by default)
abaxus migrate                  apply migrations (advisory-locked) and the bootstrap key
abaxus keys create --name N --scope S [--scope S ...]
abaxus audit verify             check the audit log's hash chain end to end
abaxus verify calculation ID    recompute a calculation from raw events: ok, or what differs
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

from functions_framework._http.gunicorn import GunicornApplication

from core.config import PROJECT_ROOT, reload_settings, settings
from core.domain.errors import NotFound
from core.logging import configure_logging
from core.services import api_keys, audit, pricing, regions, runtime
from core.services.caller import SYSTEM
from functions import devworker, openapi
from functions.devserver import DevServer
from functions.regions_dev import Topology


def _prepare_database() -> str:
    url = runtime.database_url(settings())
    os.environ["DATABASE_URL"] = url
    reload_settings()
    runtime.release_connections()
    runtime.migrate(url)
    runtime.ensure_bootstrap_key(settings())
    regions.prepare(settings())  # a region's publications and subscriptions, a central's
    return url


def cmd_migrate(_: argparse.Namespace) -> int:
    _prepare_database()
    print("migrations applied; schema at head")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    _prepare_database()
    created = api_keys.create_key(SYSTEM, name=args.name, scopes=args.scope)
    print(f"id:     {created.key['id']}\nscopes: {', '.join(created.key['scopes'])}")
    print(f"secret: {created.secret}\n(shown once: store it now)")
    return 0


def cmd_audit_verify(_: argparse.Namespace) -> int:
    _prepare_database()
    report = audit.verify()
    if report.ok:
        print(f"ok: {report.rows_checked} audit rows, chain intact")
        return 0
    assert report.first_break is not None
    print(f"BROKEN at audit row {report.first_break.row_id}: {report.first_break.reason}")
    return 1


def cmd_verify_calculation(args: argparse.Namespace) -> int:
    _prepare_database()
    try:
        report = pricing.verify(args.calculation_id)
    except NotFound as error:
        print(f"error: {error.detail}")
        return 2
    if report.ok:
        print(f"ok: {report.calculation_id} recomputes from the raw events, line by line")
        return 0
    print(f"DIFFERS: {report.calculation_id}")
    for difference in report.differences:
        print(f"  {difference}")
    return 1


def cmd_dev(args: argparse.Namespace) -> int:
    if args.regions:
        return cmd_dev_regions(args)
    host, port = (
        args.host or settings().host,
        args.port if args.port is not None else settings().port,
    )
    embedded = not settings().database_url
    _prepare_database()
    if embedded:  # make run: the dev server keeps its embedded PostgreSQL running
        runtime.watch_embedded(settings().abaxus_data_dir, threading.Event())
    base_url = f"http://127.0.0.1:{port}"
    os.environ["K_SINK"] = base_url + "/_broker"
    config = reload_settings()
    created = runtime.create_dev_key()
    server = DevServer(base_url=base_url, knative_dir=config.abaxus_knative_dir)
    runtime.release_connections()  # the workers open their own pools after the fork
    _banner(base_url, created)

    def start_broker(_worker: Any) -> None:
        runtime.after_fork()
        runtime.start_role_loops({"ingest", "aggregate"})  # every function is served here
        server.broker.start(
            pings=config.abaxus_dev_ticks, deliverers=2 if config.abaxus_dev_deliveries else 0
        )

    os.environ.setdefault("THREADS", str(config.threads))
    application = GunicornApplication(  # type: ignore[no-untyped-call]
        server,
        host,
        port,
        False,
        post_worker_init=start_broker,
        **devworker.hooks(devworker.Balance()),  # keep-alive connections spread evenly
    )
    devworker.serve(application)
    return 0


def cmd_dev_regions(args: argparse.Namespace) -> int:
    """`abaxus dev --regions a,b`: a central on PORT and each region on PORT+1, … (API.md
    §10), each on an embedded PostgreSQL of its own under ABAXUS_DATA_DIR/regions-dev."""
    names = [name.strip() for name in args.regions.split(",") if name.strip()]
    if not names or len(set(names)) != len(names) or "central" in names:
        print("error: --regions takes distinct region names, e.g. eu-west-1,us-east-1")
        return 2
    try:
        for name in names:
            regions.region_name(name)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    port = args.port if args.port is not None else settings().port
    topology = Topology(
        settings().abaxus_data_dir / "regions-dev",
        names,
        port,
        # three servers on one terminal: warnings and errors only, unless asked otherwise
        env={"ABAXUS_LOG_LEVEL": os.environ.get("ABAXUS_LOG_LEVEL", "WARNING")},
    )
    try:
        topology.start(runtime.start_replicating_database)
        assert topology.central is not None
        os.environ.update(
            ABAXUS_ROLE="central",
            ABAXUS_REGION="central",
            DATABASE_URL=topology.central.database_url,
        )
        reload_settings()
        runtime.release_connections()
        topology.attach_all(lambda region, connection: regions.attach(SYSTEM, region, connection))
    except BaseException:
        topology.stop()
        raise
    print(topology.banner(), flush=True)
    return topology.wait()


def _banner(base_url: str, created: api_keys.CreatedKey | None) -> None:
    lines = [f"ABAXUS is serving every function on {base_url}", f"  health: {base_url}/healthz"]
    if created is not None:
        lines += [
            "",
            "  A first admin API key was created. It is shown ONCE, here:",
            f"      {created.secret}",
            f"  export ABAXUS_KEY={created.secret}",
            f'  curl -H "Authorization: Bearer $ABAXUS_KEY" {base_url}/v1/api-keys',
        ]
    width = max(len(line) for line in lines) + 2
    print("=" * width, *lines, "=" * width, sep="\n", flush=True)


def cmd_openapi(args: argparse.Namespace) -> int:
    text = openapi.render()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_logging(settings().abaxus_log_level)
    parser = argparse.ArgumentParser(prog="abaxus", description="ABAXUS usage-based billing")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="serve every function on one port")
    dev.add_argument("--host", default=None)
    dev.add_argument("--port", type=int, default=None)
    dev.add_argument(
        "--regions",
        default=None,
        help="a multi-region topology: a central on PORT, these regions on PORT+1, …",
    )
    dev.set_defaults(run=cmd_dev)
    commands.add_parser("migrate", help="apply migrations").set_defaults(run=cmd_migrate)
    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope", action="append", required=True, choices=["events:write", "read", "admin"]
    )
    create.set_defaults(run=cmd_keys_create)
    audit_parser = commands.add_parser("audit", help="audit log").add_subparsers(
        dest="audit", required=True
    )
    audit_parser.add_parser("verify", help="verify the hash chain").set_defaults(
        run=cmd_audit_verify
    )
    verify = commands.add_parser("verify", help="recompute stored results").add_subparsers(
        dest="verify", required=True
    )
    calculation = verify.add_parser(
        "calculation", help="recompute a calculation from raw events and stored definitions"
    )
    calculation.add_argument("calculation_id")
    calculation.set_defaults(run=cmd_verify_calculation)
    document = commands.add_parser("openapi", help="write the OpenAPI document")
    document.add_argument("--output", default=str(PROJECT_ROOT / "docs" / "openapi.json"))
    document.set_defaults(run=cmd_openapi)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
