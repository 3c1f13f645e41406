"""``bgtasks emulator``: FCM and APNs on this machine, for trying device tasks without phones,
Firebase or Apple credentials (:mod:`mobile_push.emulator`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from bgtasks.cli import _common as cli

#: Default ports: beside the Prefect server's 4200 and the REST API's 4300.
FCM_PORT, APNS_PORT, APNS_SANDBOX_PORT, CONTROL_PORT = 4410, 4411, 4412, 4413


def emulator(
    *,
    directory: Annotated[Path | None, Parameter(name="--dir", help="Where its CA, credentials and push.env are kept "
                                                "(default: emulator/ in the bgtasks home).")] = None,
    fcm_port: Annotated[int, Parameter(help="Port of the FCM endpoint (0: a free one).")] = FCM_PORT,
    apns_port: Annotated[int, Parameter(help="Port of the APNs production host (0: a free one).")] = APNS_PORT,
    apns_sandbox_port: Annotated[int, Parameter(help="Port of the APNs sandbox host (0: a free one).")] = APNS_SANDBOX_PORT,
    control_port: Annotated[int, Parameter(help="Port of the simulated phones' control API (0: a free one).")] = CONTROL_PORT,
    api_url: Annotated[str | None, Parameter(help="bgtasks' REST API, where the simulated phones register and "
                                             "report (default: BGTASKS_API_HOST and _PORT).")] = None,
) -> int:
    """Run the push emulator in the foreground until Ctrl-C or SIGTERM: the FCM v1 endpoint and APNs'
    production and sandbox hosts on 127.0.0.1, over TLS from their own CA. It writes push.env, the
    BGTASKS_PUSH_* settings that send bgtasks' pushes to it, and hosts the simulated phones
    (`bgtasks device simulate`)."""
    from mobile_push.emulator.control import EmulatorService
    from mobile_push.emulator.credentials import StoreCredentials

    s = cli.settings()
    where = directory or s.home / "emulator"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    api = api_url or f"http://{s.api.host}:{s.api.port}"
    try:
        service = EmulatorService(where, api, StoreCredentials(s.store_url, s.api.auth != "none"),
                                  fcm_port=fcm_port, apns_port=apns_port, apns_sandbox_port=apns_sandbox_port,
                                  control_port=control_port).start()
    except OSError as exc:  # a port in use, a directory not writable
        cli.fail(f"the push emulator could not start: {exc}")
    emu = service.emulator
    try:
        assert emu.fcm is not None and emu.apns is not None and emu.apns_sandbox is not None
        cli.console.print(
            f"[green]Push emulator up[/].\n"
            f"  FCM:           {emu.fcm.send_url}\n"
            f"  APNs:          {emu.apns.base_url} (production), {emu.apns_sandbox.base_url} (sandbox)\n"
            f"  Settings:      {emu.env_file}\n"
            f"  Phones:        {service.control_url} (`bgtasks device simulate`), registering with {api}\n"
            "Point bgtasks at it: export the settings before `bgtasks up`, e.g.\n"
            f"  set -a; . {emu.env_file}; set +a\n"
            "Press Ctrl-C to stop.", highlight=False, soft_wrap=True)
        stop.wait()
    finally:
        service.stop()
    return 0
