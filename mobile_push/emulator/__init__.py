"""FCM and APNs on this machine: the push services bgtasks talks to, for development and tests.

* ``FCMEmulator`` (``.fcm``): FCM HTTP v1 ``messages:send`` and Google's OAuth2 token
  endpoint, HTTP/2 (and HTTP/1.1) over TLS.
* ``APNsEmulator`` (``.apns``): Apple's APNs provider API, HTTP/2 over TLS, ES256 provider tokens.
* ``PushEmulator`` (``.stack``): both, with APNs' production and sandbox hosts, their own CA
  and credentials kept in a directory, and the settings that point bgtasks there
  (``bgtasks emulator``).

Each server runs in its own event-loop thread on 127.0.0.1, records every request, answers
with the services' real status codes and error bodies, and can be scripted to fail per
device token (the tests do).
"""

from ._server import HANG, Recorder
from .apns import APNsEmulator, APNsRequest, APNsResponse
from .fcm import FCMEmulator, FCMRequest, FCMResponse, TokenRequest
from .stack import PushEmulator

__all__ = [
    "HANG", "Recorder", "APNsEmulator", "APNsRequest", "APNsResponse", "FCMEmulator", "FCMRequest", "FCMResponse",
    "PushEmulator", "TokenRequest",
]
