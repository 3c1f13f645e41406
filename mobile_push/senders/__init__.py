"""The senders, one module per technology, and the factory that builds them from settings.

* :mod:`~mobile_push.senders.fcm`: ``FcmSender`` (firebase-admin, FCM HTTP v1)
* :mod:`~mobile_push.senders.apns`: ``ApnsSender`` (HTTP/2 provider API, ES256 token)
* :mod:`~mobile_push.senders.memory`: ``RecordingSender`` (records, answers DELIVERED)

``make_senders`` imports the network modules only when their credentials are
set (firebase-admin is slow to import). A transport without credentials is
absent from the result; the dispatcher reports the runs that need it as
CONFIG failures with :func:`missing_credentials_error`. A credentials file
that its group or others may read is refused (a ValueError naming the setting).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bgtasks.home import check_private
from mobile_push.senders.memory import RecordingSender
from mobile_push.types import Sender, Transport

if TYPE_CHECKING:
    from bgtasks.settings import PushSettings

__all__ = ["make_senders", "missing_settings", "missing_credentials_error", "RecordingSender"]

_REQUIRED = {
    Transport.FCM: (("fcm_credentials_file", "BGTASKS_PUSH_FCM_CREDENTIALS_FILE"),),
    Transport.APNS: (("apns_key_file", "BGTASKS_PUSH_APNS_KEY_FILE"), ("apns_key_id", "BGTASKS_PUSH_APNS_KEY_ID"),
                     ("apns_team_id", "BGTASKS_PUSH_APNS_TEAM_ID")),
}
_WHAT = {
    Transport.FCM: "the Firebase service-account JSON (Firebase console > Project settings > Service accounts "
                   "> Generate new private key)",
    Transport.APNS: "the APNs auth key .p8, its key id and your team id (Apple Developer > Certificates, "
                    "Identifiers & Profiles > Keys)",
}


def missing_settings(transport: Transport | str, push: PushSettings) -> list[str]:
    """The ``BGTASKS_PUSH_*`` variables ``transport`` needs that are not set (empty: configured)."""
    if push.sender == "memory":
        return []
    return [env for attr, env in _REQUIRED[Transport(transport)] if not getattr(push, attr)]


def missing_credentials_error(transport: Transport | str, push: PushSettings) -> str:
    """The CONFIG error for a run that needs ``transport`` when it is not configured."""
    t = Transport(transport)
    missing = missing_settings(t, push) or [env for _, env in _REQUIRED[t]]
    return (f"{t.value.upper()} is not configured: set {', '.join(missing)} ({_WHAT[t]}), "
            "or BGTASKS_PUSH_SENDER=memory to record pushes without sending")


def _refuse_shared(path: Path | None, setting: str) -> None:
    """A credentials file that group or others may read is refused: it may have leaked."""
    if path is None:
        return
    try:
        check_private(Path(path), f"{setting}:")
    except FileNotFoundError:
        return  # the sender says it cannot read it
    except PermissionError as exc:
        raise ValueError(str(exc)) from None


def make_senders(push: PushSettings) -> dict[Transport, Sender]:
    """One sender per configured transport (both recording senders when ``push.sender == 'memory'``).

    Raises:
        ValueError: a credentials file is unreadable or not what it should be (the
            message names the setting; never its content).
    """
    if push.sender == "memory":
        return {Transport.FCM: RecordingSender(Transport.FCM), Transport.APNS: RecordingSender(Transport.APNS)}
    for path, setting in ((push.fcm_credentials_file, "BGTASKS_PUSH_FCM_CREDENTIALS_FILE"),
                          (push.apns_key_file, "BGTASKS_PUSH_APNS_KEY_FILE")):
        _refuse_shared(path, setting)
    senders: dict[Transport, Sender] = {}
    if not missing_settings(Transport.FCM, push):
        from mobile_push.senders.fcm import FcmSender

        assert push.fcm_credentials_file is not None
        senders[Transport.FCM] = FcmSender(push.fcm_credentials_file, fcm_url=push.fcm_url,
                                           chunk_size=min(push.chunk_size, 100), engine=push.fcm_engine,
                                           ca_file=push.fcm_ca_file)
    if not missing_settings(Transport.APNS, push):
        from mobile_push.senders.apns import ApnsSender

        assert push.apns_key_file and push.apns_key_id and push.apns_team_id
        senders[Transport.APNS] = ApnsSender(push.apns_key_file, push.apns_key_id, push.apns_team_id,
                                             environment=push.apns_environment, base_url=push.apns_base_url,
                                             other_base_url=push.apns_other_base_url, ca_file=push.apns_ca_file)
    return senders
