"""The ACL rules: most specific wins, deny wins a tie, ranges are all or nothing."""

from __future__ import annotations

import pytest

from concord.auth.rules import Perm, allows_key, allows_prefix, common_prefix, parse_rules
from concord.errors import InvalidRequestError


def rules(*raw: list[str]) -> tuple:  # type: ignore[type-arg]
    return parse_rules([list(r) for r in raw])


def test_allows_key_when_most_specific_rule_allows() -> None:
    """A longer prefix beats a shorter one, an exact key beats any prefix."""
    r = rules(["*", "read", "allow"], ["secret:*", "read", "deny"], ["secret:open", "read", "allow"])
    assert True is allows_key(r, "a", Perm.READ)
    assert False is allows_key(r, "secret:x", Perm.READ)
    assert True is allows_key(r, "secret:open", Perm.READ)


def test_deny_wins_when_rules_tie() -> None:
    """Two rules of the same specificity: deny wins."""
    r = rules(["a*", "write", "allow"], ["a*", "write", "deny"])
    assert False is allows_key(r, "ab", Perm.WRITE)


def test_write_allows_read_and_deny_read_denies_write() -> None:
    """Allow write covers read; deny read covers write (a write may reveal the value)."""
    r = rules(["*", "write", "allow"])
    assert True is allows_key(r, "k", Perm.READ)
    assert False is allows_key(r, "k", Perm.ADMIN)
    r = rules(["*", "write", "allow"], ["p*", "read", "deny"])
    assert False is allows_key(r, "p1", Perm.WRITE)
    r = rules(["*", "write", "allow"], ["p*", "write", "deny"])
    assert True is allows_key(r, "p1", Perm.READ)
    assert False is allows_key(r, "p1", Perm.WRITE)


def test_no_rule_denies() -> None:
    """Default deny."""
    assert False is allows_key(rules(["a*", "read", "allow"]), "b", Perm.READ)


def test_range_is_refused_when_a_more_specific_deny_lies_inside() -> None:
    """All or nothing: one denied key inside the prefix refuses the whole range."""
    r = rules(["feature:*", "read", "allow"], ["feature:secret", "read", "deny"])
    assert True is allows_prefix(r, "feature:a", Perm.READ)
    assert False is allows_prefix(r, "feature:", Perm.READ)
    assert False is allows_prefix(r, "", Perm.READ)


def test_range_is_refused_when_only_part_of_it_is_allowed() -> None:
    """An allow rule inside the range does not grant the whole range."""
    r = rules(["feature:*", "read", "allow"])
    assert False is allows_prefix(r, "feat", Perm.READ)
    assert True is allows_prefix(r, "feature:x", Perm.READ)


@pytest.mark.parametrize("raw", [
    ["a*b", "read", "allow"], ["", "read", "allow"], ["a", "rd", "allow"], ["a", "read", "maybe"],
    ["a", "read"],
])
def test_parse_rule_refuses_bad_rule(raw: list[str]) -> None:
    """`*` only at the end, known perms and effects, three fields."""
    with pytest.raises(InvalidRequestError):
        parse_rules([raw])


def test_common_prefix_bounds_a_range() -> None:
    assert "user:1" == common_prefix("user:10", "user:19")
    assert "" == common_prefix("a", "b")
