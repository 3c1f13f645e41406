"""Push fan-out throughput: our senders against the naive baselines, on the push emulators.

Each emulator (``mobile_push.emulator.FCMEmulator``, ``.APNsEmulator``) runs in its own
process, so the client's and the server's CPU are both real and measured
apart. Printed per row: messages/s (wall clock), client CPU and server CPU per
message, and how many were delivered.

* FCM, ours: ``FcmSender`` on each engine against the fake over TLS, as
  fcm.googleapis.com: ``h2`` (the default: firebase-admin's encoded messages on
  one HTTP/2 connection of our small client) and ``sdk`` (firebase-admin's
  ``send_each_async``: httpx, HTTP/2 by ALPN).
* FCM, baseline: firebase-admin's plain ``messaging.send_each`` loop in chunks
  of 500 (a thread per message over requests, HTTP/1.1, the SDK's default
  retry config).
* APNs, ours: ``ApnsSender`` on one HTTP/2 connection with up to
  ``max_concurrency`` streams in flight, on each engine: ``h2`` (the default,
  a small client on the h2 state machine) and ``httpx``.
* APNs, baseline: one request at a time over one httpx HTTP/2 client.
* End to end with simulated phones: ``bench/fleet.py`` (one task, 1,000 devices, a real
  server, worker and REST API), run by ``make bench`` after this script.
* Run after run, both transports (``--runs``, default 100 runs of 10 devices, back to
  back): each run through the worker's push service (``mobile_push.service``: the
  senders outlive the run), against each run building its own sender as device-task
  runs did. Printed beside the rate: the TLS connections made, and the APNs provider
  tokens signed / the FCM access tokens fetched.

    .venv/bin/python bench/push.py                 # 10,000 devices per transport
    .venv/bin/python bench/push.py --devices 1000  # a quick run

Not a test: nothing is asserted, the numbers are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPIC = "com.example.bench"


# ----------------------------------------------------------------- fake servers


def _serve(kind: str, conn: Connection, workdir: str) -> None:
    """Run one fake in this process until told to stop (commands over ``conn``)."""
    from mobile_push.emulator import APNsEmulator, FCMEmulator

    fake: Any
    if kind == "apns":
        fake = APNsEmulator(topics={TOPIC}).start()
        info = {"base_url": fake.base_url, "ca": str(fake.ca_cert_path), "key_file": str(fake.write_auth_key(workdir)),
                "key_id": fake.key_id, "team_id": fake.team_id}
    else:
        fake = FCMEmulator(project_id="bgtasks-bench", tls=True).start()  # HTTP/2 over TLS, as FCM
        info = {"send_url": fake.send_url, "base_url": fake.base_url, "ca": str(fake.ca_cert_path),
                "credentials": str(fake.write_service_account_file(Path(workdir) / "service-account.json"))}
    conn.send(info)
    try:
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                fake.reset()
                if kind == "fcm":
                    fake.h2_connections = 0
                conn.send(None)
            elif cmd == "count":
                conn.send(len(fake.requests))
            elif cmd == "connections-and-tokens" and kind == "apns":  # TLS connections, provider tokens seen
                seen = fake.requests.snapshot()
                conn.send((len({q.connection_id for q in seen}), len({q.headers.get("authorization") for q in seen})))
            elif cmd == "connections-and-tokens":  # FCM: HTTP/2 connections, access tokens fetched
                conn.send((fake.h2_connections, len(fake.token_requests)))
            else:
                break
    finally:
        fake.stop()


class Server:
    """A fake in a child process, with its CPU time."""

    def __init__(self, kind: str, workdir: Path) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(kind, child, str(workdir)), daemon=True)
        self.proc.start()
        self.info: dict[str, str] = self.conn.recv()
        assert self.proc.pid is not None
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def call(self, cmd: str) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(30)


# ------------------------------------------------------------------ measuring


@dataclass
class Row:
    transport: str
    client: str
    messages: int
    delivered: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s if self.wall_s else 0.0


def _self_cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def measure(transport: str, client: str, server: Server, n: int,
                  run: Callable[[], Awaitable[int]], reset: bool = True) -> Row:
    if reset:
        server.call("reset")
    c0, s0, w0 = _self_cpu(), server.cpu_s(), time.perf_counter()
    delivered = await run()
    wall = time.perf_counter() - w0
    return Row(transport, client, n, delivered, wall, _self_cpu() - c0, server.cpu_s() - s0)


def _payload(i: int, device: str) -> dict[str, str]:
    from mobile_push.payload import build_payload

    return build_payload(task_id="bench-task", run_id=f"run-{i}", task_name="bench", handler="",
                         constraints={"requiresNetwork": True}, data={"i": i}, report_token=uuid.uuid4().hex,
                         report_base_url="https://api.example.com", device_id=device)


# ------------------------------------------------------------------------ FCM


async def bench_fcm(server: Server, n: int) -> list[Row]:
    import firebase_admin
    from firebase_admin import credentials, messaging

    from mobile_push.senders.fcm import FcmSender, build_fcm_message
    from mobile_push.types import Platform, PushMessage, PushTarget, Transport

    info = server.info
    # The SDK's httpx and requests trust the fake's CA as they would a system one.
    os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = info["ca"]
    messages = [PushMessage(PushTarget(f"a{i}", Platform.ANDROID, Transport.FCM, f"fid-{i:06d}-" + "x" * 140),
                            _payload(i, f"a{i}")) for i in range(n)]
    rows = []
    for engine, label in (("h2", "ours: FcmSender engine=h2, 1 HTTP/2 connection"),
                          ("sdk", "ours: FcmSender engine=sdk (send_each_async, httpx h2)")):
        sender = FcmSender(info["credentials"], fcm_url=info["send_url"], engine=engine,  # type: ignore[arg-type]
                           ca_file=info["ca"], app_name=f"bench-{engine}")
        await sender.send(messages[:200])  # warm up: access token, connection

        async def ours(sender: FcmSender = sender) -> int:
            results = await sender.send(messages)
            return sum(r.kind.value == "delivered" for r in results)

        rows.append(await measure("FCM", label, server, n, ours))
        await sender.aclose()

    app = firebase_admin.initialize_app(credentials.Certificate(info["credentials"]), name="bench-baseline")
    messaging._get_messaging_service(app)._fcm_url = info["send_url"]
    fm = [build_fcm_message(m, now_s=time.time()) for m in messages]
    messaging.send_each(fm[:200], app=app)

    async def baseline() -> int:
        def loop() -> int:
            ok = 0
            for start in range(0, len(fm), 500):
                ok += messaging.send_each(fm[start:start + 500], app=app).success_count
            return ok

        return await asyncio.to_thread(loop)

    rows.append(await measure("FCM", "baseline: send_each loop (HTTP/1.1, chunks of 500)", server, n, baseline))
    return rows


# ----------------------------------------------------------------------- APNs


async def bench_runs(kind: str, server: Server, runs: int, devices: int,
                     workdir: Path) -> list[tuple[Row, int, int]]:
    """Run after run: through the worker's push service, and each run on its own (a new process
    each, as runs are: firebase-admin's app and its access token are per process, so the
    baseline gives each run its own app name)."""
    from bgtasks.settings import PushSettings
    from mobile_push.service import ENV_SOCKET, PushService, senders_for
    from mobile_push.types import Platform, PushMessage, PushTarget, Transport

    info = server.info
    if kind == "apns":
        transport, name = Transport.APNS, "APNs"
        push = PushSettings(sender="auto", apns_key_file=Path(info["key_file"]), apns_key_id=info["key_id"],
                            apns_team_id=info["team_id"], apns_base_url=info["base_url"],
                            apns_ca_file=Path(info["ca"]))
        batches = [[PushMessage(PushTarget(f"i{r}-{i}", Platform.IOS, Transport.APNS, uuid.uuid4().hex * 2, TOPIC),
                                _payload(i, f"i{r}-{i}")) for i in range(devices)] for r in range(runs)]
    else:
        transport, name = Transport.FCM, "FCM"
        push = PushSettings(sender="auto", fcm_credentials_file=Path(info["credentials"]), fcm_url=info["send_url"],
                            fcm_ca_file=Path(info["ca"]))
        batches = [[PushMessage(PushTarget(f"a{r}-{i}", Platform.ANDROID, Transport.FCM, f"fid-{r}-{i}-" + "x" * 140),
                                _payload(i, f"a{r}-{i}")) for i in range(devices)] for r in range(runs)]

    def fresh_process() -> None:
        """As a new process: no firebase-admin apps (nor their access tokens)."""
        import firebase_admin

        from mobile_push.senders import fcm as fcm_module

        fcm_module._REGISTRY.clear()
        for app_name in [a for a in firebase_admin._apps if a.startswith("bgtasks-fcm-")]:
            del firebase_admin._apps[app_name]  # delete_app() cannot run inside this loop

    async def all_runs(fresh_apps: bool = False) -> int:
        ok = 0
        for batch in batches:
            if fresh_apps:  # each run is a process of its own
                fresh_process()
            senders = await senders_for(push)  # what each device-task run does
            try:
                ok += sum(r.kind.value == "delivered" for r in await senders[transport].send(batch))
            finally:
                for s in senders.values():
                    await s.aclose()
        return ok

    out = []
    fresh_process()  # the worker's senders fetch their own token, counted below
    server.call("reset")
    service = PushService(push, workdir / "run" / f"push-{kind}.sock")
    await service.start()
    os.environ[ENV_SOCKET] = str(service.path)
    try:
        row = await measure(name, f"ours: {runs} runs x {devices}, worker's push service", server,
                            runs * devices, all_runs, reset=False)
        out.append((row, *server.call("connections-and-tokens")))
    finally:
        del os.environ[ENV_SOCKET]
        await service.close()
    row = await measure(name, f"baseline: {runs} runs x {devices}, a sender per run", server,
                        runs * devices, lambda: all_runs(fresh_apps=True))
    out.append((row, *server.call("connections-and-tokens")))
    return out


async def bench_apns(server: Server, n: int, concurrencies: list[int]) -> list[Row]:
    import httpx

    from mobile_push.senders.apns import ApnsSender, ProviderToken, _load_key, build_apns_request
    from mobile_push.types import Platform, PushMessage, PushTarget, Transport

    info = server.info
    messages = [PushMessage(PushTarget(f"i{i}", Platform.IOS, Transport.APNS, uuid.uuid4().hex * 2, TOPIC),
                            _payload(i, f"i{i}")) for i in range(n)]
    rows = []
    runs = [("h2", c) for c in concurrencies] + [("httpx", c) for c in concurrencies]
    for engine, conc in runs:
        sender = ApnsSender(info["key_file"], info["key_id"], info["team_id"], base_url=info["base_url"],
                            ca_file=info["ca"], max_concurrency=conc, engine=engine)  # type: ignore[arg-type]
        await sender.send(messages[:10])

        async def ours(sender: ApnsSender = sender) -> int:
            results = await sender.send(messages)
            return sum(r.kind.value == "delivered" for r in results)

        label = f"ours: ApnsSender engine={engine}, {conc} streams"
        rows.append(await measure("APNs", label, server, n, ours))
        await sender.aclose()

    import ssl

    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.load_verify_locations(cafile=info["ca"])
    tokens = ProviderToken(_load_key(Path(info["key_file"])), info["key_id"], info["team_id"])
    async with httpx.AsyncClient(http2=True, verify=ctx) as client:
        async def naive() -> int:
            ok = 0
            for m in messages:
                req = build_apns_request(m, now_s=time.time())
                r = await client.post(info["base_url"] + req.path, content=req.body,
                                      headers={**req.headers, "authorization": f"bearer {tokens.current()}"})
                ok += r.status_code == 200
            return ok

        await client.post(info["base_url"] + "/3/device/00", content=b"{}")
        rows.append(await measure("APNs", "baseline: naive httpx loop (1 request at a time)", server, n, naive))
    return rows


# ------------------------------------------------------------------------ main


def print_table(rows: list[Row]) -> None:
    cores = os.cpu_count()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"\nPush fan-out on the local fakes (each fake in its own process); "
          f"{cores} cores ({affinity} usable), Python {sys.version.split()[0]}\n")
    head = f"{'transport':<9} {'client':<52} {'msgs':>6} {'ok':>6} {'wall s':>7} {'msg/s':>8} " \
           f"{'client ms/msg':>13} {'server ms/msg':>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.transport:<9} {r.client:<52} {r.messages:>6} {r.delivered:>6} {r.wall_s:>7.2f} {r.rate:>8.0f} "
              f"{1000 * r.client_cpu_s / r.messages:>13.3f} {1000 * r.server_cpu_s / r.messages:>13.3f}")
    print()


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bgtasks-bench-push-") as tmp:
        rows: list[Row] = []
        per_run: list[tuple[Row, int, int]] = []
        if not args.skip_fcm:
            server = Server("fcm", Path(tmp))
            try:
                rows += await bench_fcm(server, args.devices)
                if args.runs:
                    per_run += await bench_runs("fcm", server, args.runs, args.run_devices, Path(tmp))
            finally:
                server.stop()
        if not args.skip_apns:
            server = Server("apns", Path(tmp))
            try:
                rows += await bench_apns(server, args.devices, args.concurrency)
                if args.runs:
                    per_run += await bench_runs("apns", server, args.runs, args.run_devices, Path(tmp))
            finally:
                server.stop()
        print_table(rows)
        if per_run:
            print_table([r for r, _, _ in per_run])
            for r, connections, tokens in per_run:
                what = "provider token(s) signed" if r.transport == "APNs" else "access token(s) fetched"
                print(f"{r.transport} {r.client}: {connections} TLS connection(s), {tokens} {what}")
            print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000, help="devices per transport (default 10000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 256],
                        help="ApnsSender max_concurrency values to try")
    parser.add_argument("--runs", type=int, default=100, help="run-after-run case: runs (0: skip)")
    parser.add_argument("--run-devices", type=int, default=10, help="run-after-run case: devices per run")
    parser.add_argument("--skip-fcm", action="store_true")
    parser.add_argument("--skip-apns", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
