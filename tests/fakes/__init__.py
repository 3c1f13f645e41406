"""Protocol-faithful local fakes of the push services tests cannot reach.

* ``FakeAPNs`` (``tests.fakes.apns``): Apple's APNs provider API, HTTP/2 + TLS.
* ``FakeFCM`` (``tests.fakes.fcm``): FCM HTTP v1 ``messages:send`` plus Google's
  OAuth2 token endpoint, HTTP/1.1.

Each runs in its own event-loop thread on 127.0.0.1 with a free port, records
every request, and can be scripted to fail per device token.
"""

from ._base import HANG, Recorder
from .apns import APNsRequest, APNsResponse, FakeAPNs
from .fcm import FakeFCM, FCMRequest, FCMResponse, TokenRequest

__all__ = [
    "HANG", "Recorder", "FakeAPNs", "APNsRequest", "APNsResponse", "FakeFCM", "FCMRequest", "FCMResponse",
    "TokenRequest",
]
