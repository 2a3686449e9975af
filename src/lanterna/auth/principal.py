"""Who a caller is and what it may ask for: priority ceilings and fairness ids, as pure functions.

Fairness policy (documented choice): with a key, the fairness id *is* the key's tenant. A client header may
only sub-divide within it: header ``team-a`` under tenant ``acme`` becomes ``acme/team-a``; a header that
already starts with ``acme/`` is kept; anything else is treated the same way (prefixed), so a client can never
name another tenant's flow. Anonymous callers (open mode) all share one tenant, ``anonymous``, sub-divided the
same way, so one open-mode client cannot claim to be many independent flows outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ANONYMOUS_TENANT = "anonymous"
_MAX_SUB_LEN = 64  # bounded flow-id cardinality per tenant is flow control's job; bound the length here


@dataclass(frozen=True, slots=True)
class Principal:
    """One API key's rights. ``models`` None: every model; ``max_priority`` caps the objective's priority."""

    tenant: str
    key_hash: str = ""
    name: str = ""
    max_priority: int = 0
    requests_per_s: float | None = None
    burst: int | None = None  # requests; default max(1, ceil(requests_per_s))
    tokens_per_min: float | None = None
    token_burst: int | None = None  # tokens; default tokens_per_min
    models: frozenset[str] | None = None
    admin: bool = False

    @property
    def anonymous(self) -> bool:
        return not self.key_hash

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


def anonymous(max_priority: int) -> Principal:
    """The principal of a request in open mode (auth disabled)."""
    return Principal(tenant=ANONYMOUS_TENANT, max_priority=max_priority)


def effective_priority(requested_objective: str | None, objectives_map: Mapping[str, int],
                       principal: Principal) -> int:
    """The priority a request gets: a named objective from config maps to its priority, a bare integer is
    taken as is, anything else is 0; the result is capped at the principal's ceiling. Negative priorities
    (sheddable) are always allowed: asking for less is never a privilege."""
    if not requested_objective:
        wanted = 0
    elif requested_objective in objectives_map:
        wanted = objectives_map[requested_objective]
    else:
        try:
            wanted = int(requested_objective)
        except ValueError:
            wanted = 0
    return min(wanted, principal.max_priority)


def effective_fairness(header_value: str | None, principal: Principal) -> str:
    """The fairness id: the principal's tenant, optionally sub-divided by the client header (``tenant/sub``)."""
    tenant = principal.tenant
    if not header_value:
        return tenant
    sub = header_value.strip()
    prefix = tenant + "/"
    if sub.startswith(prefix):
        sub = sub[len(prefix):]
    if not sub or sub == tenant:
        return tenant
    return prefix + sub[:_MAX_SUB_LEN]
