"""Constraints, with Android WorkManager's meaning, in one room.

- :mod:`~triggers.constraints.host`: this host's state as a typed :class:`HostSnapshot`
  (network, power, idle, storage), read by the sensors the trigger daemon also runs;
- :mod:`~triggers.constraints.evaluate`: the one evaluation, ``unmet(constraints,
  snapshot)``, with what was observed for each constraint that fails;
- :mod:`~triggers.constraints.waiting`: the visible waiting state (``AwaitingConstraints``)
  and the release of waiting runs whose constraints hold.

The worker (``bgtasks.policies.constraints``: gate at submission, stop when lost) and the
trigger daemon (release at a change) both use these; nothing else decides a constraint.
"""

from triggers.constraints.evaluate import Unmet, describe, unmet
from triggers.constraints.host import HostSnapshot

__all__ = ["HostSnapshot", "Unmet", "describe", "unmet"]
