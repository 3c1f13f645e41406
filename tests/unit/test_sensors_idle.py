"""The idle/active state machine (pure), CPU percent math and the PSI parser."""

from __future__ import annotations

from pathlib import Path

from triggers.sensors import IdleSample, IdleState, IdleThresholds, next_idle_state
from triggers.sensors.idle import cpu_percent_between, diff_idle, read_psi_some_avg10, x11_user_idle_s

T = IdleThresholds(cpu_percent=10.0, psi_some_avg10=20.0, user_idle_s=60.0, idle_after_samples=3,
                   active_after_samples=2)


def feed(busy_percents: list[float], *, psi: float | None = None, user_idle_s: float | None = None,
         t: IdleThresholds = T, start: IdleState | None = None) -> tuple[list[list[str]], IdleState]:
    """Each sample adds 100 CPU-seconds of which ``p`` were busy."""
    state = start
    busy, total = (0.0, 0.0) if start is None else (start.cpu_busy_s, start.cpu_total_s)
    out = []
    if state is None:
        state = next_idle_state(None, IdleSample(busy, total, psi, user_idle_s), t)
    for p in busy_percents:
        busy, total = busy + p, total + 100.0
        new = next_idle_state(state, IdleSample(busy, total, psi, user_idle_s), t)
        out.append([c.change for c in diff_idle(state, new)])
        state = new
    return out, state


def test_cpu_percent_between() -> None:
    assert cpu_percent_between(10, 100, 35, 200) == 25.0
    assert cpu_percent_between(10, 100, 10, 100) is None
    assert cpu_percent_between(0, 0, 500, 100) == 100.0


def test_idle_after_n_quiet_samples_once() -> None:
    changes, state = feed([5, 5, 5, 5, 5])
    assert changes == [[], [], ["idle"], [], []]
    assert state.idle and state.cpu_percent == 5.0


def test_a_busy_sample_resets_the_quiet_streak() -> None:
    changes, _ = feed([5, 5, 50, 5, 5, 5])
    assert changes == [[], [], [], [], [], ["idle"]]


def test_active_after_m_busy_samples() -> None:
    _, idle = feed([1, 1, 1])
    assert idle.idle
    changes, state = feed([50, 1, 50, 50], start=idle)
    assert changes == [[], [], [], ["active"]]
    assert not state.idle


def test_user_input_makes_an_idle_device_active_at_once() -> None:
    _, idle = feed([1, 1, 1], user_idle_s=600)
    assert idle.idle
    changes, _ = feed([1], user_idle_s=2, start=idle)
    assert changes == [["active"]]


def test_cpu_pressure_blocks_idle() -> None:
    changes, state = feed([1, 1, 1, 1], psi=35.0)
    assert changes == [[], [], [], []] and not state.idle


def test_the_first_sample_is_never_quiet_and_emits_nothing() -> None:
    first = next_idle_state(None, IdleSample(1.0, 10.0))
    assert first.cpu_percent is None and not first.idle
    assert diff_idle(None, first) == []


def test_a_sample_in_the_same_clock_tick_changes_nothing() -> None:
    """An empty window (the counters did not move) is no evidence of a busy CPU."""
    t = IdleThresholds(idle_after_samples=3, active_after_samples=1)
    _, idle = feed([1, 1, 1], t=t)
    same = next_idle_state(idle, IdleSample(idle.cpu_busy_s, idle.cpu_total_s, 3.5, None), t)
    assert same == idle and diff_idle(idle, same) == []
    busy = next_idle_state(same, IdleSample(idle.cpu_busy_s + 90, idle.cpu_total_s + 100, 3.5, None), t)
    assert [c.change for c in diff_idle(same, busy)] == ["active"] and busy.cpu_percent == 90.0


def test_active_payload() -> None:
    t = IdleThresholds(idle_after_samples=3, active_after_samples=1)
    _, idle = feed([1, 1, 1], t=t)
    new = next_idle_state(idle, IdleSample(idle.cpu_busy_s + 90, idle.cpu_total_s + 100, 3.5, None), t)
    [change] = diff_idle(idle, new)
    assert change.event == "bgtasks.device.active"
    assert change.payload == {"cpu_percent": 90.0, "psi_some_avg10": 3.5, "user_idle_s": None}


def test_psi_parser(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "cpu").write_text(
        "some avg10=12.34 avg60=1.00 avg300=0.50 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read_psi_some_avg10(tmp_path) == 12.34
    assert read_psi_some_avg10(tmp_path / "none") is None


def test_no_display_means_unknown_user_idle() -> None:
    assert x11_user_idle_s(":4242") is None
