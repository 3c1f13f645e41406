"""``bgtasks emulator`` (mobile_push.emulator.PushEmulator): bgtasks' own senders push to it with
settings alone, its credentials are private and survive a restart, and the command runs and stops."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bgtasks.settings import PushSettings
from mobile_push.emulator import PushEmulator
from mobile_push.emulator.stack import ENV_FILE, SA_FILE
from mobile_push.types import OutcomeKind, Transport
from tests.integration.test_push_senders import android, ios

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


async def test_bgtasks_pushes_to_the_emulator_with_settings_alone_and_a_restart_keeps_them(tmp_path: Path) -> None:
    from mobile_push.senders import make_senders

    home = tmp_path / "emulator"
    ports = dict(fcm_port=free_port(), apns_port=free_port(), apns_sandbox_port=free_port())
    with PushEmulator(home, **ports) as emu:
        env = emu.settings_env()
        assert env_file(home / ENV_FILE) == env
        kept = {p: p.read_bytes() for p in (home / SA_FILE, emu.key_file, home / "tls" / "ca.pem",
                                            home / "tls" / "server-key.pem")}
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for secret in (home / ENV_FILE, home / SA_FILE, emu.key_file, home / "tls" / "server-key.pem"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret

    with PushEmulator(home, **ports) as emu:  # restarted: the same settings still work
        assert emu.settings_env() == env
        assert {p: p.read_bytes() for p in kept} == kept
        push = PushSettings(**{k.removeprefix("BGTASKS_PUSH_").lower(): v for k, v in env.items()})
        senders = make_senders(push)
        try:
            [to_android] = await senders[Transport.FCM].send([android()])
            [to_iphone] = await senders[Transport.APNS].send([ios()])
        finally:
            for sender in senders.values():
                await sender.aclose()
        assert (to_android.kind, to_iphone.kind) == (OutcomeKind.DELIVERED, OutcomeKind.DELIVERED), (to_android, to_iphone)
        assert [r.ok for r in emu.fcm.requests.snapshot()] == [True]
        assert [r.ok for r in emu.apns.requests.snapshot()] == [True]
        assert emu.apns_sandbox.requests.snapshot() == []


def test_the_bgtasks_emulator_command_writes_its_settings_and_stops_on_sigterm(tmp_path: Path) -> None:
    from bgtasks.stack import wait_until

    home = tmp_path / "emu"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bgtasks"), "emulator", "--dir", str(home), "--fcm-port", "0",
         "--apns-port", "0", "--apns-sandbox-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, BGTASKS_HOME=str(tmp_path / "home")))
    try:
        # Its last line written: the file is complete.
        wait_until(lambda: (home / ENV_FILE).exists() and "APNS_CA_FILE" in (home / ENV_FILE).read_text(), 60,
                   "push.env", lambda: proc.poll() is None)
        settings = env_file(home / ENV_FILE)
        assert settings["BGTASKS_PUSH_FCM_URL"].startswith("https://127.0.0.1:")
        assert settings["BGTASKS_PUSH_APNS_OTHER_BASE_URL"].startswith("https://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "Push emulator up" in out and str(home / ENV_FILE) in out
    assert "PRIVATE KEY" not in out  # the keys stay in their files
