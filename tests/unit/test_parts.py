"""The stack's parts are defined once: ``bgtasks up`` and the service files run the same."""

from __future__ import annotations

import os
import signal
import sys

from bgtasks import service
from bgtasks.settings import load_settings
from bgtasks.stack import Stack


def test_bgtasks_up_and_the_services_run_the_same_commands_with_the_same_graces() -> None:
    settings = load_settings()
    stack = Stack(settings)
    target = service.Target(flavour="linux", scope="user", python=sys.executable, user="u",
                            user_home="/home/u", hostname="h")
    units = service.parts(settings, target)
    running = [stack.server, stack.worker, stack.daemon, stack.api]
    assert [p.name for p in running] == [u.name for u in units] == ["server", "worker", "daemon", "api"]
    # The worker's name is the only difference: the foreground stack adds its PID.
    assert stack.worker.argv[-1] == f"bgtasks-{os.uname().nodename}-{os.getpid()}"
    assert units[1].argv[-1] == "bgtasks-h"
    assert [p.argv[:-1] if p.name == "worker" else p.argv for p in running] == \
        [list(u.argv[:-1]) if u.name == "worker" else list(u.argv) for u in units]
    assert [p.stop_grace_s for p in running] == [u.stop_grace_s for u in units] == [20, 30, 15, 10]


def test_a_part_that_ignores_its_graceful_signal_is_killed_after_its_grace(tmp_path: object) -> None:
    """The grace is the part's own; the second signal forces, then SIGKILL."""
    from pathlib import Path

    from bgtasks.stack import Process

    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    part = Process("stubborn", [sys.executable, "-c", script], Path(str(tmp_path)) / "p.log", stop_grace_s=0.5)
    part.start(dict(os.environ), Path(str(tmp_path)))
    while "up" not in part.log_path.read_text():
        assert not part.wait(0.05), "the script ended before it ignored SIGTERM"
    part.stop((signal.SIGTERM,))
    assert not part.alive() and part.proc is not None and part.proc.returncode == -signal.SIGKILL
