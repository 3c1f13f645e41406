"""WHO IS WOKEN: device registry, FCM and APNs senders, silent payloads.

Not built yet (issue "mobile_push").
"""
