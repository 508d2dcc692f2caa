"""Load and validate a rule file; version it by its label plus a hash of its content.

Any problem becomes a ``RuleError`` whose one-line message names the rule, the field and the
problem, e.g. ``rule boosts[1] 'win_back': field 'multiply': Input should be greater than 0``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from patron.settings import PROJECT_ROOT
from serving.rules.models import Boost, Pin, RuleError, RuleSet

DEFAULT_RULES_FILE = PROJECT_ROOT / "config" / "rules.yaml"
_NAMED_LISTS = ("boosts", "pins")


@dataclass(frozen=True)
class LoadedRules:
    """A validated rule set plus its identity: ``<version>+<content hash>``."""

    rules: RuleSet
    content_hash: str
    source: str

    @property
    def version(self) -> str:
        return f"{self.rules.version}+{self.content_hash}"

    @functools.cached_property
    def item_anchored(self) -> LoadedRules:
        """The same rules without the diversity cap or pins, for lists anchored on one item
        (similar items, bought together) where one category is the point. Cached, so the
        engine's per-rule-set compilation cache keeps working."""
        r = self.rules.model_copy(
            update={
                "diversity": self.rules.diversity.model_copy(update={"max_per_category": None}),
                "pins": [],
            }
        )
        return LoadedRules(r, self.content_hash, self.source)

    def summary(self) -> dict[str, Any]:
        r = self.rules
        return {
            "version": self.version,
            "label": r.version,
            "content_hash": self.content_hash,
            "source": self.source,
            "tiers": list(r.tiers) if r.tiers else "the model's",
            "boosts": [b.name for b in r.boosts],
            "pins": [p.name for p in r.pins],
            "blocklist": len(r.exclusions.blocklist),
            "repurchase_overrides": len(r.exclusions.repurchase_days),
            "max_per_category": r.diversity.max_per_category,
            "fallback": list(r.fallback),
        }


def rules_file_from_env() -> Path:
    """``PATRON_RULES_FILE`` if set, else the shipped config/rules.yaml."""
    env = os.environ.get("PATRON_RULES_FILE")
    return Path(env) if env else DEFAULT_RULES_FILE


def content_hash(rules: RuleSet) -> str:
    """Hash of the validated content (not the text), so comments and key order don't matter."""
    canonical = json.dumps(rules.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _error_from_validation(exc: ValidationError, raw: dict[str, Any]) -> RuleError:
    err = exc.errors(include_url=False)[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, RuleError):
        return inner
    loc = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    if len(loc) >= 2 and loc[0] in _NAMED_LISTS and loc[1].isdigit():
        idx = int(loc[1])
        items = raw.get(loc[0])
        name = None
        if isinstance(items, list) and idx < len(items) and isinstance(items[idx], dict):
            name = items[idx].get("name")
        fld = ".".join(loc[2:]) or "(rule)"
        return RuleError(loc[0], idx, str(name) if name is not None else None, fld, msg)
    if len(loc) >= 1:
        return RuleError(loc[0], None, None, ".".join(loc[1:]) or loc[0], msg)
    return RuleError(None, None, None, "(file)", msg)


def parse_rules(data: Any, source: str = "<memory>") -> LoadedRules:
    """Validate an already-parsed document (dict) into ``LoadedRules`` or raise ``RuleError``."""
    if not isinstance(data, dict):
        raise RuleError(None, None, None, "(file)", "expected a mapping of rule kinds at top level")
    try:
        rules = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, data) from None
    return LoadedRules(rules=rules, content_hash=content_hash(rules), source=source)


def parse_rules_text(text: str, source: str = "<memory>") -> LoadedRules:
    """Parse YAML (or JSON, a YAML subset) text into ``LoadedRules``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RuleError(None, None, None, "(file)", f"not valid YAML{where}: {problem}") from None
    return parse_rules(data, source)


def load_rules(path: Path | str | None = None) -> LoadedRules:
    """Load and validate a rule file (default: ``PATRON_RULES_FILE`` or config/rules.yaml)."""
    p = Path(path) if path is not None else rules_file_from_env()
    if not p.is_file():
        raise FileNotFoundError(f"rules file {p} does not exist")
    return parse_rules_text(p.read_text(encoding="utf-8"), source=str(p))


FALLBACK_ONLY = {
    "version": "fallback-only",
    "eligibility": {"enforce_min_tier": False},
    "exclusions": {"out_of_stock": False, "recently_bought_days": 0},
}


@functools.cache
def fallback_only() -> LoadedRules:
    """Rules off: the model's own ranking, padded by the fallback chain (no eligibility,
    exclusions beyond the model's, boosts, pins or diversity cap). What ``rules=None`` means
    everywhere (evaluation's "served" row, ``--no-rules`` exports)."""
    return parse_rules(FALLBACK_ONLY, "<fallback-only>")


def check_tiers(rules: LoadedRules, tiers: tuple[str, ...]) -> None:
    """Refuse rules that name other tiers than the model's (``RuleError`` naming the rule and
    field): the same names in the same order, and every tier a condition names among them."""
    r = rules.rules
    if r.tiers is not None and tuple(r.tiers) != tuple(tiers):
        raise RuleError(
            None,
            None,
            None,
            "tiers",
            f"rules tiers {list(r.tiers)} are not the model's tiers {list(tiers)} (its bundle "
            "manifest, as the features were built from config/tiers.yaml): use the same names "
            "in the same order, or leave 'tiers' out",
        )
    named: list[tuple[str, int, Boost | Pin]] = [
        *(("boosts", i, b) for i, b in enumerate(r.boosts)),
        *(("pins", i, p) for i, p in enumerate(r.pins)),
    ]
    for kind, i, rule in named:
        for fld in ("tier_at_least", "tier_at_most"):
            tier = getattr(rule.when, fld)
            if tier is not None and tier not in tiers:
                raise RuleError(
                    kind,
                    i,
                    rule.name,
                    f"when.{fld}",
                    f"unknown tier {tier!r}; the model's tiers are {', '.join(tiers)}",
                )
