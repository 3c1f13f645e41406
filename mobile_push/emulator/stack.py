"""FCM and APNs on this machine, with their own CA and credentials: ``bgtasks emulator``.

``PushEmulator(directory)`` starts the FCM v1 endpoint (with Google's OAuth token exchange)
and APNs' provider API twice (production and sandbox hosts, one team key), all over TLS from
one CA. What bgtasks needs to push there is written into ``directory`` and kept across
restarts, each file readable by its owner only:

* ``tls/ca.pem`` (and the server's certificate and key): the CA to trust;
* ``fcm-service-account.json``: a Firebase service-account key whose ``token_uri`` is the
  emulator's (rewritten at each start, as the port may change; the key stays);
* ``AuthKey_<key id>.p8``: an APNs auth key (ES256);
* ``push.env``: the ``BGTASKS_PUSH_*`` settings that point bgtasks at all of it.

So bgtasks is pointed at the emulator by settings alone, and its senders run unchanged.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .apns import APNsEmulator
from .fcm import FCMEmulator
from .tls import load_or_make_tls_files, write_private

PROJECT_ID = "bgtasks-emulator"
TEAM_ID = "EMUTEAM001"
KEY_ID = "EMUKEY0001"
SA_FILE = "fcm-service-account.json"
ENV_FILE = "push.env"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class PushEmulator:
    """FCM + APNs production + APNs sandbox on 127.0.0.1. Ports 0: free ones."""

    def __init__(self, directory: Path, *, fcm_port: int = 0, apns_port: int = 0,
                 apns_sandbox_port: int = 0) -> None:
        self.directory = Path(directory)
        self.ports = (fcm_port, apns_port, apns_sandbox_port)
        self.fcm: FCMEmulator | None = None
        self.apns: APNsEmulator | None = None
        self.apns_sandbox: APNsEmulator | None = None

    # ---- credentials, made once and kept ------------------------------------------------

    def _service_account_key(self) -> tuple[bytes, str]:
        """The service account's RSA key and key id, from the last start's file if there is one."""
        try:
            info = json.loads((self.directory / SA_FILE).read_text())
            return info["private_key"].encode(), info["private_key_id"]
        except (OSError, ValueError, KeyError):
            return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), secrets.token_hex(20)

    def _apns_key(self) -> ec.EllipticCurvePrivateKey:
        path = self.key_file
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        except (OSError, ValueError):
            pass
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(path, _pem(key))
        return key

    @property
    def key_file(self) -> Path:
        return self.directory / f"AuthKey_{KEY_ID}.p8"

    @property
    def env_file(self) -> Path:
        return self.directory / ENV_FILE

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        tls = load_or_make_tls_files(self.directory / "tls", "bgtasks push emulator CA")
        sa_pem, sa_kid = self._service_account_key()
        apns_public = self._apns_key().public_key()
        fcm_port, apns_port, sandbox_port = self.ports
        try:
            self.fcm = FCMEmulator(PROJECT_ID, private_key_pem=sa_pem, private_key_id=sa_kid, tls_files=tls,
                                   port=fcm_port).start()
            self.apns = APNsEmulator(TEAM_ID, KEY_ID, apns_public, tls_files=tls, port=apns_port).start()
            self.apns_sandbox = APNsEmulator(TEAM_ID, KEY_ID, apns_public, tls_files=tls, port=sandbox_port).start()
        except BaseException:
            self.stop()
            raise
        write_private(self.directory / SA_FILE, json.dumps(self.fcm.service_account_info(), indent=2).encode())
        write_private(self.env_file, "".join(f"{k}={v}\n" for k, v in self.settings_env().items()).encode())
        return self

    def stop(self) -> None:
        for server in (self.apns_sandbox, self.apns, self.fcm):
            if server is not None:
                server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what bgtasks needs -------------------------------------------------------------

    def settings_env(self) -> dict[str, str]:
        """The ``BGTASKS_PUSH_*`` settings that send bgtasks' pushes here (while running)."""
        assert self.fcm is not None and self.apns is not None and self.apns_sandbox is not None, "not started"
        ca = str(self.fcm.ca_cert_path)
        return {
            "BGTASKS_PUSH_FCM_CREDENTIALS_FILE": str(self.directory / SA_FILE),
            "BGTASKS_PUSH_FCM_URL": self.fcm.send_url,
            "BGTASKS_PUSH_FCM_CA_FILE": ca,
            "BGTASKS_PUSH_APNS_KEY_FILE": str(self.key_file),
            "BGTASKS_PUSH_APNS_KEY_ID": KEY_ID,
            "BGTASKS_PUSH_APNS_TEAM_ID": TEAM_ID,
            "BGTASKS_PUSH_APNS_ENVIRONMENT": "production",
            "BGTASKS_PUSH_APNS_BASE_URL": self.apns.base_url,
            "BGTASKS_PUSH_APNS_OTHER_BASE_URL": self.apns_sandbox.base_url,
            "BGTASKS_PUSH_APNS_CA_FILE": ca,
        }
