"""The active rule set of a running service, swapped atomically (old rules kept on error)."""

from __future__ import annotations

import threading
from typing import Any

from serving.rules.loader import LoadedRules, load_rules, parse_rules


class RulesHolder:
    """Holds the current ``LoadedRules``; readers take one reference for a whole request."""

    def __init__(self, rules: LoadedRules) -> None:
        self._rules = rules
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> RulesHolder:
        """Rules from ``PATRON_RULES_FILE`` (default config/rules.yaml)."""
        return cls(load_rules())

    def current(self) -> LoadedRules:
        return self._rules

    def replace(self, data: Any, source: str = "PUT /admin/rules") -> LoadedRules:
        """Validate ``data`` and make it current; on ``RuleError`` the current rules stay."""
        new = parse_rules(data, source=source)
        with self._lock:
            self._rules = new
        return new
