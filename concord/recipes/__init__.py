"""
Coordination recipes over the client (docs/recipes.md): a lease kept alive by a thread,
a fair lock with a fencing token, and leader election.

Client-side only: each recipe is a sequence of ordinary ops (`lease_grant`, `put` with a
lease, strong reads), so every safety property comes from the state machine's log order,
not from anything these classes remember.
"""

from __future__ import annotations

from concord.recipes.election import Election
from concord.recipes.lease import KeptLease, LeaseLostError
from concord.recipes.lock import Lock, LockLostError

__all__ = ["Election", "KeptLease", "LeaseLostError", "Lock", "LockLostError"]
