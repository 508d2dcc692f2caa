"""The active rule set of a running service, swapped atomically (old rules kept on error)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from serving.rules.loader import LoadedRules, check_tiers, parse_rules


class RulesHolder:
    """Holds the current ``LoadedRules``; readers take one reference for a whole request."""

    def __init__(self, rules: LoadedRules) -> None:
        self._rules = rules
        self._lock = threading.Lock()
        # the served model's tiers (set by the app): a new rule set must name the same
        self.model_tiers: Callable[[], tuple[str, ...]] | None = None

    def current(self) -> LoadedRules:
        return self._rules

    def validate(self, data: Any, source: str = "PUT /admin/rules") -> LoadedRules:
        """``data`` as a rule set this service can serve (parsed, tiers checked against the
        served model), without activating it; raises ``RuleError``."""
        new = parse_rules(data, source=source)
        if self.model_tiers is not None:
            check_tiers(new, self.model_tiers())
        return new

    def set(self, new: LoadedRules) -> None:
        with self._lock:
            self._rules = new

    def replace(self, data: Any, source: str = "PUT /admin/rules") -> LoadedRules:
        """Validate ``data`` and make it current; on ``RuleError`` the current rules stay."""
        new = self.validate(data, source)
        self.set(new)
        return new
