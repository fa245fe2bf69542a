"""Child specs, trees and policies: pure data and its validation."""

from __future__ import annotations

import pytest

from supervisor.spec import (
    Backoff,
    ChildSpec,
    ExitCode,
    Group,
    Intensity,
    Restart,
    Strategy,
    Tree,
)


def noop() -> None:
    """A target that does nothing."""


def test_delay_doubles_up_to_the_cap_when_restarts_are_consecutive() -> None:
    """Exponential backoff: initial, x factor per consecutive restart, capped at max_s."""
    backoff = Backoff(initial_s=0.1, factor=2.0, max_s=0.5)
    assert [0.0, 0.1, 0.2, 0.4, 0.5, 0.5] == [backoff.delay_s(n) for n in range(6)]


def test_delay_stays_finite_when_a_child_failed_very_often() -> None:
    """A huge consecutive count does not overflow the float."""
    assert 5.0 == Backoff().delay_s(10_000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"initial_s": -1.0}, "initial_s must be >= 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"initial_s": 2.0, "max_s": 1.0}, "max_s must be >= initial_s"),
        ({"reset_after_s": 0.0}, "reset_after_s must be > 0"),
    ],
)
def test_backoff_is_rejected_when_a_value_is_out_of_range(
    kwargs: dict[str, float], message: str
) -> None:
    """Every Backoff field is checked on construction."""
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_intensity_is_rejected_when_values_are_out_of_range() -> None:
    """max_restarts >= 0 and window_s > 0."""
    with pytest.raises(ValueError, match="max_restarts must be >= 0"):
        Intensity(max_restarts=-1)
    with pytest.raises(ValueError, match="window_s must be > 0"):
        Intensity(window_s=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "has space"}, "child name must match"),
        ({"name": ""}, "child name must match"),
        ({"shutdown_timeout_s": 0.0}, "shutdown_timeout_s must be > 0"),
        ({"max_rss_bytes": -1}, "max_rss_bytes must be >= 0"),
        ({"target": 42}, "target must be callable"),
        ({"ready_before_next": True}, "ready_before_next needs reports_ready"),
    ],
)
def test_child_spec_is_rejected_when_a_field_is_invalid(
    kwargs: dict[str, object], message: str
) -> None:
    """ChildSpec validates its name, target and limits."""
    fields: dict[str, object] = {"name": "ok", "target": noop}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ChildSpec(**fields)  # type: ignore[arg-type]


def test_tree_is_rejected_when_child_names_repeat_across_groups() -> None:
    """Child names are unique in the whole tree (they key READY info)."""
    with pytest.raises(ValueError, match="duplicate child names: a"):
        Tree(
            (
                Group("g1", Strategy.ONE_FOR_ONE, (ChildSpec("a", noop),)),
                Group("g2", Strategy.ONE_FOR_ONE, (ChildSpec("a", noop),)),
            )
        )


def test_tree_is_rejected_when_it_has_no_child() -> None:
    """An empty tree would exit at once: refuse it."""
    with pytest.raises(ValueError, match="at least one child"):
        Tree((Group("g", Strategy.ONE_FOR_ONE, ()),))


def test_children_come_in_start_order_when_listed_from_a_tree() -> None:
    """Groups in order, children in order."""
    tree = Tree(
        (
            Group("core", Strategy.REST_FOR_ONE, (ChildSpec("raft", noop), ChildSpec("writer", noop))),
            Group("readers", Strategy.ONE_FOR_ONE, (ChildSpec("r0", noop),)),
        )
    )
    assert ["raft", "writer", "r0"] == [c.name for c in tree.children()]


def test_defaults_are_permanent_restart_when_spec_is_minimal() -> None:
    """A minimal spec restarts permanently and does not report READY."""
    spec = ChildSpec("a", noop)
    assert (Restart.PERMANENT, False, ()) == (spec.restart, spec.reports_ready, spec.args)


def test_exit_codes_are_stable_when_documented() -> None:
    """The exit codes are a contract (docs/operations.md)."""
    assert {"OK": 0, "INTERNAL": 1, "USAGE": 2, "STARTUP_FAILED": 3, "INTENSITY": 4, "LIFELINE": 75} == {
        code.name: int(code) for code in ExitCode
    }
