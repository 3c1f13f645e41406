"""WHAT STARTS runs: the trigger daemon, its sensors and constraint evaluation.

The daemon (:mod:`triggers.daemon`) watches the host through ``sensors/`` and emits
Prefect events that start triggered tasks and release runs waiting for constraints;
:mod:`triggers.constraints` is the one room of WorkManager's constraints (the host's
snapshot, their evaluation, the visible waiting state), used by the worker and the daemon.
"""
