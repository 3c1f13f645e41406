"""The Prefect seam: every internal bgtasks relies on is checked, and used nowhere else.

The checks run against the installed Prefect; a changed internal is simulated by
removing it, in this process or (for ``bgtasks up``) in a child through sitecustomize.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgtasks import prefect_seam as seam

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("bgtasks", "flows", "deployments", "triggers", "mobile_push")
BGTASKS = Path(sys.executable).parent / "bgtasks"


def test_every_internal_has_the_shape_bgtasks_relies_on() -> None:
    assert seam.problems(required=None) == []
    seam.single_flight_csrf()  # a worker checks again after patching: the check sees the original
    assert seam.problems(required=None) == []
    assert {i.group for i in seam.INTERNALS} == set(seam.GROUPS)


def test_a_removed_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.workers.base import BaseWorker

    monkeypatch.delattr(BaseWorker, "_propose_pending_state")
    found = seam.problems("worker")
    assert len(found) == 1 and found[0].startswith("prefect.workers.base:BaseWorker._propose_pending_state: ")
    assert seam.problems("child", "server", "client") == []
    with pytest.raises(SystemExit, match="BaseWorker._propose_pending_state"):
        seam.require("worker")


def test_changed_engine_steps_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step Prefect's engine runs that the zygote's copy does not know is reported."""
    monkeypatch.setattr(seam, "ENGINE_STEPS", seam.ENGINE_STEPS - {"run_flow"})
    found = seam.problems("child")
    assert len(found) == 1 and "new: ['run_flow']" in found[0]


def test_a_renamed_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seam, "INTERNALS", tuple(
        seam.Internal(i.group, i.name, i.why, seam.in_source("prefect.flow_engine", "PREFECT__NO_SUCH"))
        if i.name.startswith(seam.ENV_FLOW_RUN_ID) else i for i in seam.INTERNALS))
    assert [p.split(":")[0] for p in seam.problems("child")] == [seam.ENV_FLOW_RUN_ID + ", " + seam.ENV_FLOW_ENTRYPOINT
                                                                + ", " + seam.ENV_RUNNER_HOOKS]


def test_bgtasks_up_refuses_an_incompatible_prefect_before_starting_anything(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from prefect.workers.base import BaseWorker\ndel BaseWorker._propose_pending_state\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BGTASKS_"))}
    env.update(PYTHONPATH=str(site), BGTASKS_HOME=str(home))
    proc = subprocess.run([str(BGTASKS), "up"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BaseWorker._propose_pending_state" in proc.stderr
    assert not (home / "logs" / "server.log").exists()  # nothing was started


def _private_prefect_uses(path: Path) -> list[str]:
    """Private Prefect names a module uses: private modules or names imported from Prefect,
    ``PREFECT__*`` variables, private attributes of names imported from Prefect, and
    BaseWorker's private members through ``self``/``super()`` in a subclass of a Prefect class."""
    tree = ast.parse(path.read_text())
    from_prefect: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "prefect":
            if any(p.startswith("_") for p in node.module.split(".")):  # type: ignore[union-attr]
                found.append(f"imports {node.module}")
            for alias in node.names:
                from_prefect.add(alias.asname or alias.name)
                if alias.name.startswith("_"):
                    found.append(f"imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names
                      if a.name.split(".")[0] == "prefect" and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("PREFECT__"):
            found.append(f"uses {node.value}")
    subclasses = [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                  and any(isinstance(b, ast.Name) and b.id in from_prefect for b in c.bases)]
    in_subclass = {id(n) for c in subclasses for n in ast.walk(c)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in from_prefect:
                found.append(f"uses {owner.id}.{node.attr}")
            elif id(node) in in_subclass and (
                    (isinstance(owner, ast.Name) and owner.id == "self")
                    or (isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super")):
                if node.attr in _base_worker_privates():
                    found.append(f"uses BaseWorker.{node.attr}")
    return found


_PRIVATES: set[str] = set()


def _base_worker_privates() -> set[str]:
    if not _PRIVATES:
        from prefect.workers.process import ProcessWorker

        worker = ProcessWorker(work_pool_name="bgtasks-seam-check")
        _PRIVATES.update(n for n in [*vars(worker), *dir(ProcessWorker)]
                         if n.startswith("_") and not n.startswith("__"))
    return _PRIVATES


def test_private_prefect_names_are_used_through_the_seam_only() -> None:
    """Outside the seam, the only private Prefect names are BaseWorker members the seam checks
    (the warm worker overrides and reads them); anything else must be added to the seam."""
    declared = {f"uses BaseWorker.{n}" for n in (*seam.WORKER_METHODS, *seam.WORKER_ATTRS)}
    undeclared = {}
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            if path == ROOT / "bgtasks" / "prefect_seam.py":
                continue
            uses = [u for u in _private_prefect_uses(path) if u not in declared]
            if uses:
                undeclared[str(path.relative_to(ROOT))] = sorted(set(uses))
    assert undeclared == {}


def test_the_scan_sees_what_it_forbids(tmp_path: Path) -> None:
    """The scan itself: each kind of use it must catch, in a module written for the purpose."""
    module = tmp_path / "m.py"
    module.write_text(
        "from prefect.runner._process_manager import ProcessHandle\n"
        "from prefect.engine import _drive_run_flow_result\n"
        "from prefect.client.base import PrefectHttpxAsyncClient\n"
        "from prefect.workers.process import ProcessWorker\n"
        "import prefect._internal.metrics\n"
        "ENV = 'PREFECT__FLOW_RUN_ID'\n"
        "PrefectHttpxAsyncClient._add_csrf_headers\n"
        "class W(ProcessWorker):\n"
        "    def f(self):\n"
        "        return self._runs_task_group, super()._submit_run, self._mine\n"
        "class Other:\n"
        "    def f(self):\n"
        "        return self._client\n")
    assert sorted(_private_prefect_uses(module)) == sorted([
        "imports prefect.runner._process_manager", "imports prefect.engine._drive_run_flow_result",
        "imports prefect._internal.metrics", "uses PREFECT__FLOW_RUN_ID",
        "uses PrefectHttpxAsyncClient._add_csrf_headers", "uses BaseWorker._runs_task_group",
        "uses BaseWorker._submit_run"])


def test_prefects_clients_share_one_verifying_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Prefect client used to parse the whole CA bundle (about 35 ms, several per run)."""
    import ssl

    import certifi
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    seam.share_verify_contexts()
    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(kwargs.get("cafile"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    for make in (PrefectClient, SyncPrefectClient, PrefectClient):
        make("http://127.0.0.1:9/api")
    assert built == []  # built once, when shared, before these
    import prefect.client.orchestration as orchestration
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    cafile = PREFECT_API_SSL_CERT_FILE.value() or certifi.where()  # as Prefect's clients choose it
    shared = orchestration.ssl.create_default_context(cafile=cafile)
    assert shared is orchestration.ssl.create_default_context(cafile=cafile)
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    # Prefect turns verification off on the context it asks for without a file: never the shared one.
    unverified = orchestration.ssl.create_default_context()
    assert unverified is not shared and built == [None]


def test_the_zygote_trusts_the_version_check_its_worker_made(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect
    from prefect._internal import version_checking as vc

    url = "http://127.0.0.1:9/api-checked-by-the-worker"
    for form in (url, url + "/"):
        assert not vc._is_api_version_check_cached(vc._api_version_check_key(form, prefect.__version__))
    monkeypatch.delenv(seam.ENV_VERSION_CHECKED, raising=False)
    seam.trust_checked_server_version()  # not told: nothing is trusted
    assert not vc._is_api_version_check_cached(vc._api_version_check_key(url, prefect.__version__))
    monkeypatch.setenv(seam.ENV_VERSION_CHECKED, url)
    seam.trust_checked_server_version()
    for form in (url, url + "/"):  # as the websocket clients and as PrefectClient key it
        assert vc._is_api_version_check_cached(vc._api_version_check_key(form, prefect.__version__))


async def test_a_childs_events_find_the_objects_its_worker_read() -> None:
    import uuid
    from datetime import UTC, datetime

    from prefect.client.schemas.objects import Flow, WorkPool, WorkQueue
    from prefect.events import related as rel

    now = datetime.now(UTC)
    flow = Flow(id=uuid.uuid4(), name="f", created=now)
    pool_id = uuid.uuid4()
    queue = WorkQueue(id=uuid.uuid4(), name="normal", created=now, work_pool_id=pool_id)
    pool = WorkPool(id=pool_id, name="background-tasks", type="bgtasks-warm", created=now,
                    default_queue_id=queue.id)
    seam.prefill_related({f"flow.{flow.id}": flow.model_dump_json(), f"work-queue.{queue.id}": queue.model_dump_json(),
                          f"work-pool.{pool.name}": pool.model_dump_json(), "deployment.broken": "{}"})

    async def no_api(obj_id: object) -> None:
        raise AssertionError(f"read {obj_id} from the API")

    for kind, obj_id, obj in (("flow", flow.id, flow), ("work-queue", queue.id, queue), ("work-pool", pool.name, pool)):
        entry = await rel._get_and_cache_related_object(kind=kind, role=kind, client_method=no_api, obj_id=obj_id,
                                                        cache=rel.RESOURCE_CACHE)
        assert entry["object"] == obj
    assert "deployment.broken" not in rel.RESOURCE_CACHE  # a shape it cannot read is left to the API
