"""The spec's ``createBackgroundTask({...})`` example body, shared by the model and API tests."""

SPEC_EXAMPLE = {  # the spec's createBackgroundTask({...}) example, as written
    "name": "Data Sync",
    "description": "Sync user data with server",
    "schedule": {"type": "periodic", "interval": 3600000},
    "priority": "normal",
    "constraints": {"requiresNetwork": True, "requiresWifi": False},
    "retryPolicy": {"maxRetries": 3, "backoffMultiplier": 2, "initialBackoffMs": 1000},
}
