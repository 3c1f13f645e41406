"""Every private Prefect API and internal behaviour bgtasks relies on, listed and checked.

Prefect is pinned below 3.10, but its private modules, attributes and environment
variables may change in any release, and a rename would switch a behaviour off without
an error (constraint gating lives in an override of ``BaseWorker._propose_pending_state``).
So each internal is declared here once, with why bgtasks needs it and a check of the
shape bgtasks relies on. ``bgtasks up``, the warm worker and the Prefect server call
:func:`require` before they start: an incompatible Prefect stops them with a message
naming the internal. Code elsewhere takes private Prefect names from this module only;
``tests/unit/test_prefect_seam.py`` fails when one is used anywhere else.

Groups: ``worker`` (the warm worker's process), ``child`` (a flow run forked from the
zygote), ``server`` (the Prefect server bgtasks starts), ``client`` (every process).
"""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import inspect
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Private names the rooms import from here, and where Prefect keeps them. Resolved on first
#: use (the trigger daemon imports this module and never loads Prefect's runner).
_EXPORTS = {
    "FlowRunExecutionResult": "prefect.runner._flow_run_executor",
    "FlowRunExecutorContext": "prefect.runner._flow_run_executor",
    "ProcessHandle": "prefect.runner._process_manager",
    "create_isolated_termination_scope": "prefect.runner._process_manager",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"{module}:{name} is gone in this Prefect; {problems('worker')}") from exc

#: Variables a flow-run process reads at start (Prefect's runner sets them for its own children).
ENV_FLOW_RUN_ID = "PREFECT__FLOW_RUN_ID"
ENV_FLOW_ENTRYPOINT = "PREFECT__FLOW_ENTRYPOINT"
ENV_CONTROL_PORT = "PREFECT__CONTROL_PORT"
ENV_CONTROL_TOKEN = "PREFECT__CONTROL_TOKEN"
ENV_RUNNER_HOOKS = "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"

#: Modules a flow run imports lazily (measured: the modules a child added to ``sys.modules``
#: during a demo run); the zygote imports them once (a missing one is only slower).
WARM_MODULES = (
    "prefect.engine", "prefect.flow_engine", "prefect.task_engine", "prefect._internal.metrics",
    "prefect._internal.states", "prefect._internal.observers", "prefect._internal.pytz",
    "prefect._internal._observation_delivery", "prefect._internal.control_listener",
    "prefect.concurrency._asyncio", "prefect.concurrency._events", "prefect.concurrency._sync",
    "prefect.concurrency.services", "prefect.utilities.visualization", "prefect.results",
    "anyio._backends._asyncio", "anyio.streams.memory", "anyio.streams.stapled", "anyio.streams.tls",
    "encodings.idna", "stringprep", "rich._emoji_codes", "pytz",
    "bgtasks.settings", "bgtasks.home",  # the file-path checks of handlers' data (~20 ms a run)
)

#: The calls of ``python -m prefect.engine`` that :func:`run_engine` repeats, by name.
ENGINE_STEPS = frozenset({
    "UUID", "len", "exit", "configure_from_env", "handle_engine_signals", "load_flow_run",
    "flow_run_logger", "load_flow", "RunMetrics", "run_flow", "_drive_run_flow_result",
})


#: BaseWorker's private methods that :class:`bgtasks.warm_worker.WarmWorker` overrides or calls.
WORKER_METHODS = ("_propose_pending_state", "_submit_run", "_release_limit_slot", "_propose_submitting_state")
#: BaseWorker's private attributes the warm worker reads.
WORKER_ATTRS = ("_limiter", "_work_pool", "_work_pool_name", "_exit_stack", "_logger")


@dataclass(frozen=True)
class Internal:
    """One internal: ``check`` returns None when its shape is as relied on, else what differs."""

    group: str
    name: str
    why: str
    check: Callable[[], str | None]
    required: bool = True


def _resolve(path: str) -> Any:
    module, _, attr = path.rpartition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _exists(path: str) -> bool:
    try:
        _resolve(path)
        return True
    except (ImportError, AttributeError):
        return False


def has(path: str, *params: str) -> Callable[[], str | None]:
    """``module:attr`` exists (and, if given, takes these parameters)."""

    def check() -> str | None:
        obj = _resolve(path)
        if params:
            missing = [p for p in params if p not in inspect.signature(obj).parameters]
            if missing:
                return f"takes no parameter {', '.join(missing)}"
        return None

    return check


def in_source(path: str, *snippets: str) -> Callable[[], str | None]:
    """The source of ``module[:attr]`` contains each snippet (a behaviour read off the code)."""

    def check() -> str | None:
        source = inspect.getsource(_resolve(path) if ":" in path else importlib.import_module(path))
        missing = [s for s in snippets if s not in source]
        return f"no longer contains {', '.join(map(repr, missing))}" if missing else None

    return check


def worker_attrs(*names: str) -> Callable[[], str | None]:
    """A new ``ProcessWorker`` has these attributes (set in ``BaseWorker.__init__``)."""

    def check() -> str | None:
        from prefect.workers.process import ProcessWorker

        worker = ProcessWorker(work_pool_name="bgtasks-seam-check")
        missing = [n for n in names if not hasattr(worker, n)]
        return f"a worker has no {', '.join(missing)}" if missing else None

    return check


def engine_steps() -> str | None:
    """``python -m prefect.engine`` still makes the calls :func:`run_engine` repeats."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(importlib.import_module("prefect.engine"))))
    main = next((n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)), None)
    if main is None:
        return "has no `if __name__ == '__main__'` block"
    calls = {n.func.id for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    if calls != ENGINE_STEPS:
        added, gone = sorted(calls - ENGINE_STEPS), sorted(ENGINE_STEPS - calls)
        return f"its steps changed (new: {added or 'none'}, gone: {gone or 'none'}); update run_engine"
    return None


INTERNALS: tuple[Internal, ...] = (
    # worker: bgtasks.warm_worker
    Internal("worker", "prefect.workers.base:BaseWorker._propose_pending_state",
             "overridden: a run whose constraints fail waits instead of starting; paused tasks' runs "
             "and runs before their start time are dropped there",
             has("prefect.workers.base:BaseWorker._propose_pending_state", "flow_run")),
    Internal("worker", "prefect.workers.base:BaseWorker._submit_run",
             "wrapped: releases the slot Prefect keeps for a run whose deployment was deleted",
             has("prefect.workers.base:BaseWorker._submit_run", "flow_run")),
    Internal("worker", "prefect.workers.base:BaseWorker._propose_submitting_state",
             "overridden: no 'Submitting' state for a fork (one state change and its event fewer per run)",
             has("prefect.workers.base:BaseWorker._propose_submitting_state", "flow_run")),
    Internal("worker", "prefect.workers.base:BaseJobConfiguration._base_environment",
             "overridden: the settings' environment is computed once per settings object, not per run",
             in_source("prefect.workers.base:BaseJobConfiguration._base_environment",
                       "get_current_settings().to_environment_variables(")),
    Internal("worker", "prefect.workers.base:BaseWorker._release_limit_slot",
             "called by that wrapper", has("prefect.workers.base:BaseWorker._release_limit_slot", "flow_run_id")),
    Internal("worker", "BaseWorker." + ", ".join(WORKER_ATTRS),
             "the worker's slots (a free slot polls at once), pool id (event filter), contexts, log",
             worker_attrs(*WORKER_ATTRS)),
    Internal("worker", "prefect.runner._flow_run_executor:FlowRunExecutorContext",
             "runs each flow run (states, cancellation, crash reports) with bgtasks' fork starter",
             has("prefect.runner._flow_run_executor:FlowRunExecutorContext.create_executor",
                 "flow_run", "starter", "resolve_flow", "propose_submitting")),
    Internal("worker", "prefect.runner._flow_run_executor:FlowRunExecutionResult",
             "tells whether the executor already reported a crash",
             in_source("prefect.runner._flow_run_executor:FlowRunExecutionResult",
                       "status_code", "crash_unreported", "handle")),
    Internal("worker", "prefect.runner._process_manager:ProcessHandle",
             "the handle of a forked child", has("prefect.runner._process_manager:ProcessHandle",
                                                 "termination_scope")),
    Internal("worker", "prefect.runner._process_manager:create_isolated_termination_scope",
             "signals a forked child's process group", has(
                 "prefect.runner._process_manager:create_isolated_termination_scope")),
    # child: bgtasks.zygote
    Internal("child", "prefect.engine (__main__)", "the zygote's child repeats its steps (run_engine)",
             engine_steps),
    Internal("child", "prefect.engine:_drive_run_flow_result", "a step of run_engine",
             has("prefect.engine:_drive_run_flow_result")),
    Internal("child", "prefect._internal.control_listener:configure_from_env",
             "a step of run_engine; reads the control channel's variables",
             in_source("prefect._internal.control_listener", ENV_CONTROL_PORT, ENV_CONTROL_TOKEN)),
    Internal("child", "prefect._internal.metrics:RunMetrics", "a step of run_engine",
             has("prefect._internal.metrics:RunMetrics")),
    Internal("child", "prefect.flow_engine:observe_flow_run_suspension",
             "wrapped in the child so a run does not wait for the event stream to connect",
             has("prefect.flow_engine:observe_flow_run_suspension", "flow_run_id", "suspension_request",
                 "polling_interval")),
    Internal("child", f"{ENV_FLOW_RUN_ID}, {ENV_FLOW_ENTRYPOINT}, {ENV_RUNNER_HOOKS}",
             "set for each child as Prefect's runner sets them",
             lambda: (in_source("prefect.flow_engine", ENV_FLOW_ENTRYPOINT, ENV_RUNNER_HOOKS)()
                      or in_source("prefect.runtime.flow_run", ENV_FLOW_RUN_ID)())),
    # server: bgtasks.prefect_server, deployments.triggers
    Internal("server", "prefect.server.database.configurations:AioSqliteConfiguration.begin_transaction",
             "wrapped: SQLite write transactions begin IMMEDIATE",
             has("prefect.server.database.configurations:AioSqliteConfiguration.begin_transaction",
                 "session", "with_for_update")),
    Internal("server", "prefect.server.api.background_workers:Worker",
             "subclassed: the server's docket worker checks for due work every second, not 4 times",
             lambda: (in_source("prefect.server.api.background_workers", "async with Worker(docket)")()
                      or has("docket:Worker", "minimum_check_interval", "scheduling_resolution")()),
             required=False),
    Internal("server", "prefect.cli._server_utils (uvicorn.run)",
             "`prefect server start` serves its app with uvicorn.run in-process: the guard wraps it",
             in_source("prefect.cli._server_utils", "uvicorn.run(")),
    Internal("server", "prefect.server.events.actions:RunDeployment._upgrade_v1_templates",
             "renders a trigger's parameters as the automation does (a failed action is re-run)",
             has("prefect.server.events.actions:RunDeployment._upgrade_v1_templates", "parameters")),
    Internal("server", "prefect.server.events.schemas.automations:TriggeredAction.idempotency_key",
             "the key of a re-run trigger action is the action's own (no second run)",
             in_source("prefect.server.events.schemas.automations:TriggeredAction.idempotency_key",
                       'f"automation {self.automation.id}"', 'f"action {self.action_index}"',
                       'f"invocation {self.id}"')),
    Internal("server", "sqlalchemy.dialects.sqlite.aiosqlite:AsyncAdapt_aiosqlite_cursor",
             "its cursors are closed on their own thread (else the server can freeze under load)",
             in_source("sqlalchemy.dialects.sqlite.aiosqlite:AsyncAdapt_aiosqlite_cursor",
                       "self._connection", "self._adapt_connection", "await_"),
             required=False),
    Internal("child", "prefect.events.related:RESOURCE_CACHE",
             "prefilled in a forked child with the run's flow, deployment, work queue and pool (prefill_related)",
             lambda: (in_source("prefect.events.related", 'cache_key = f"{kind}.{obj_id}"', "entry, _ = cache[cache_key]",
                                "cache=RESOURCE_CACHE", "obj_id=flow_run.work_pool_name")()
                      or next((f"{p} is gone" for p in RELATED_KINDS.values() if not _exists(p)), None)),
             required=False),
    Internal("child", "prefect._internal.version_checking:_cache_api_version_check",
             "the zygote marks the server its worker already checked, so each run does not ask again",
             in_source("prefect._internal.version_checking", "def _cache_api_version_check(",
                       "def _api_version_check_key(", "_is_api_version_check_cached(key)"),
             required=False),
    # client: every process
    Internal("client", "prefect.client.orchestration (ssl.create_default_context)",
             "its clients take their TLS context from a shared one per CA file (share_verify_contexts)",
             in_source("prefect.client.orchestration", "ssl.create_default_context(cafile=cert_file)"),
             required=False),
    Internal("client", "prefect.client.base:PrefectHttpxAsyncClient._add_csrf_headers",
             "wrapped: one CSRF token fetch at a time (single_flight_csrf)",
             in_source("prefect.client.base:PrefectHttpxAsyncClient._add_csrf_headers",
                       "self.csrf_token", "self.csrf_client_id")),
)

GROUPS = ("worker", "child", "server", "client")


def problems(*groups: str, required: bool | None = True) -> list[str]:
    """What differs from the relied-on shape, one line per internal (empty: all as expected).
    ``required=None`` reports both kinds."""
    found = []
    for internal in INTERNALS:
        if (groups and internal.group not in groups) or (required is not None and internal.required != required):
            continue
        try:
            reason = internal.check()
        except Exception as exc:  # missing module or attribute: the message names it
            reason = f"{type(exc).__name__}: {exc}"
        if reason:
            found.append(f"{internal.name}: {reason} (bgtasks uses it: {internal.why})")
    return found


def require(*groups: str) -> None:
    """Raise ``SystemExit`` naming each required internal of ``groups`` that changed."""
    found = problems(*groups)
    if found:
        from importlib.metadata import version

        raise SystemExit(f"bgtasks does not support Prefect {version('prefect')}: a Prefect internal it "
                         "relies on changed:\n  " + "\n  ".join(found))


# ---- the engine steps and patches, used by the rooms ---------------------------------------

def run_engine(flow_run_id: str, flow_run_json: str | None) -> None:
    """``python -m prefect.engine <flow_run_id>``'s steps (checked by :func:`engine_steps`), with
    the worker's copy of the flow run instead of reading it again."""
    from uuid import UUID

    from prefect._internal.control_listener import configure_from_env
    from prefect._internal.metrics import RunMetrics
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow, load_flow_run, run_flow

    run_id = UUID(flow_run_id)
    configure_from_env()
    with handle_engine_signals(run_id):
        if flow_run_json:  # the worker's copy: one API call fewer
            from prefect.client.schemas.objects import FlowRun

            flow_run = FlowRun.model_validate_json(flow_run_json)
        else:
            flow_run = load_flow_run(flow_run_id=run_id)
        run_logger = flow_run_logger(flow_run=flow_run)
        try:
            flow = load_flow(flow_run)
        except Exception:
            run_logger.error("Unexpected exception encountered when trying to load flow", exc_info=True)
            raise
        with RunMetrics(flow_run, flow):
            result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)
            _drive_run_flow_result(flow, result)


def upgrade_v1_templates(parameters: dict[str, Any]) -> None:
    """What the server's ``RunDeployment`` action does to a deployment's parameters first."""
    from prefect.server.events.actions import RunDeployment

    RunDeployment._upgrade_v1_templates(parameters)


def trigger_action_key(automation_id: str, action_index: int, invocation: str) -> str:
    """The idempotency key the server's ``TriggeredAction`` gives a run it creates."""
    return f"automation {automation_id}, action {action_index}, invocation {invocation}"


_PATCHED_CSRF = "_bgtasks_single_flight_csrf"


def single_flight_csrf() -> None:
    """Make Prefect's async client fetch one CSRF token at a time (idempotent).

    Every token a client fetches replaces its previous one on the server. Requests sent
    together on a fresh client (the manager reads a task's runs with ``asyncio.gather``)
    each fetched one, so all but the last were refused, and the refused ones fetched again
    in step and could use up the client's retries (403 "Invalid CSRF token" on PostgreSQL).
    Here fetches are serialised per client, and a request refused with a token that another
    request already replaced takes the replacement instead of fetching a third.
    """
    from prefect.client.base import PrefectHttpxAsyncClient

    original = PrefectHttpxAsyncClient._add_csrf_headers
    if getattr(original, _PATCHED_CSRF, False):
        return

    @functools.wraps(original)  # __wrapped__: the check above reads the original's source
    async def _add_csrf_headers(self: Any, request: Any) -> None:
        state = self.__dict__.setdefault(_PATCHED_CSRF, {"lock": asyncio.Lock(), "current": None})
        sent = request.headers.get("Prefect-Csrf-Token")
        async with state["lock"]:
            if self.csrf_token is None and sent is not None and state["current"] not in (None, sent):
                self.csrf_token = state["current"]
            await original(self, request)
            state["current"] = self.csrf_token

    setattr(_add_csrf_headers, _PATCHED_CSRF, True)
    PrefectHttpxAsyncClient._add_csrf_headers = _add_csrf_headers  # type: ignore[method-assign]


class SharedVerifyContexts:
    """Prefect's client modules' ``ssl``: one verifying TLS context per CA file per process.

    Each Prefect client builds ``ssl.create_default_context(cafile=...)``, which parses the
    whole CA bundle: about 35 ms of CPU, four or five times per run (its clients, the log
    and event workers, the version checks; bench/worker.py --profile). A context that
    verifies against a given file is the same for every client, and OpenSSL contexts may be
    shared; Prefect changes only the unverified context it asks for without a file, which is
    not shared. Built in the zygote, it is inherited by every forked run. A CA file that
    changes on disk is read again when the process restarts.
    """

    def __init__(self, module: Any) -> None:
        self._ssl = module
        self._by_file: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ssl, name)

    def create_default_context(self, purpose: Any = None, *, cafile: str | None = None,
                               capath: str | None = None, cadata: Any = None) -> Any:
        purpose = self._ssl.Purpose.SERVER_AUTH if purpose is None else purpose
        if cafile is None or capath is not None or cadata is not None or purpose != self._ssl.Purpose.SERVER_AUTH:
            return self._ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        ctx = self._by_file.get(cafile)
        if ctx is None:
            ctx = self._by_file[cafile] = self._ssl.create_default_context(purpose, cafile=cafile)
        return ctx


def share_verify_contexts() -> None:
    """Give Prefect's client modules a :class:`SharedVerifyContexts` (idempotent), and build
    the default one (certifi's bundle, or ``PREFECT_API_SSL_CERT_FILE``) now."""
    import ssl

    import certifi

    shared = None
    for name in ("prefect.client.orchestration", "prefect._internal.version_checking"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        current = getattr(module, "ssl", None)
        if isinstance(current, SharedVerifyContexts):
            shared = current
        elif current is ssl:
            shared = shared or SharedVerifyContexts(ssl)
            module.ssl = shared  # type: ignore[attr-defined]
    if shared is not None:
        from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

        if not PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
            shared.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


#: Set by the warm worker for its zygote: the API URL whose server version it has checked.
ENV_VERSION_CHECKED = "BGTASKS_PREFECT_VERSION_CHECKED"


async def check_server_version_once(api_url: str) -> bool:
    """Prefect's client/server version check, as each of its websocket clients makes it
    (raises on a major-version mismatch); whether it passed (False: not reachable now)."""
    import logging

    import prefect
    from prefect._internal import version_checking as vc

    await vc.check_server_version(api_url, logging.getLogger("bgtasks.worker"), raise_on_error=False)
    return vc._is_api_version_check_cached(vc._api_version_check_key(api_url, prefect.__version__))


def trust_checked_server_version() -> None:
    """In the zygote: record the version check the worker made of the same API URL, so that
    a run's log and event clients do not each ask ``/admin/version`` again (two requests and
    two clients per run). Prefect keeps the same record after its own check."""
    url = os.environ.get(ENV_VERSION_CHECKED)
    if not url:
        return
    try:
        import prefect
        from prefect._internal import version_checking as vc

        # Prefect's clients key it by the URL as given (the websocket clients) or as httpx
        # writes it, with a trailing slash (PrefectClient).
        for form in {url, url.rstrip("/") + "/"}:
            vc._cache_api_version_check(vc._api_version_check_key(form, prefect.__version__))
    except (ImportError, AttributeError):  # another Prefect: each run checks, as before
        pass


#: The related objects Prefect's events look up for a run, and their client schemas.
RELATED_KINDS = {
    "flow": "prefect.client.schemas.objects:Flow",
    "deployment": "prefect.client.schemas.responses:DeploymentResponse",
    "work-queue": "prefect.client.schemas.objects:WorkQueue",
    "work-pool": "prefect.client.schemas.objects:WorkPool",
}


def prefill_related(related: dict[str, str]) -> None:
    """In a forked child: put the objects the worker read for the run (``"kind.id"``: JSON)
    into Prefect's related-resource cache, where its events' first lookup would put them
    after reading each from the API (four requests per run)."""
    if not related:
        return
    from prefect.events import related as rel
    from prefect.types._datetime import now

    at = now("UTC")
    for key, raw in related.items():
        kind = key.split(".", 1)[0]
        try:
            obj = _resolve(RELATED_KINDS[kind]).model_validate_json(raw)
        except Exception:  # another Prefect's shape: the events read this one themselves
            continue
        rel.RESOURCE_CACHE[key] = ({"kind": kind, "object": obj}, at)


def child_env(env: dict[str, str], flow_run_id: str) -> None:
    """Put a forked child's environment in place as Prefect's runner does for its children."""
    os.environ.update(env)
    os.environ[ENV_FLOW_RUN_ID] = flow_run_id
