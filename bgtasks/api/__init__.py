"""The REST API for app front ends (FastAPI): the spec's TypeScript shapes over HTTP.

Not yet: bearer-token auth (issue 7). Until it lands the API refuses to bind
to anything but a loopback address.
"""

from bgtasks.api.app import create_app

__all__ = ["create_app"]
