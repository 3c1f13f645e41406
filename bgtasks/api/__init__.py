"""The REST API for app front ends (FastAPI): the spec's TypeScript shapes over HTTP.

Every route but ``/health`` needs a bearer token with the route's scope
(:mod:`bgtasks.auth`); Host and Origin are checked before anything else
(docs/security.md).
"""

from bgtasks.api.app import create_app

__all__ = ["create_app"]
