"""The REST API's routes, one router per resource."""

from bgtasks.api.routes import devices, health, push, tasks

ROUTERS = (health.router, tasks.router, devices.router, push.router)
