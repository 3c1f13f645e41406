"""WHO IS WOKEN: device registry, FCM and APNs senders, silent payloads.

The registry (``registry``) keeps devices and tokens; ``dispatch`` sends a device
task's silent pushes through ``senders/`` (FCM, APNs) and records each delivery
(``delivery``); ``reports`` takes devices' reports of their work.
"""
