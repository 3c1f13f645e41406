"""WHAT STARTS runs: the trigger daemon, its sensors and constraint evaluation.

The daemon (:mod:`triggers.daemon`) watches the host through ``sensors/`` and emits
Prefect events that start triggered tasks and release runs waiting for constraints;
:mod:`triggers.constraints` is the one evaluation of WorkManager's constraints, used
by the worker, the daemon and the API; :mod:`triggers.waiting` is the visible
waiting state.
"""
