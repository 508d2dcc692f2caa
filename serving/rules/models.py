"""Typed models of the business-rule file (config/rules.yaml).

Every model forbids unknown fields so a typo is an error rather than a silently ignored rule.
Cross-field checks (tier names, unique rule names, pin slots) live on ``RuleSet`` so the error
can name the rule that is wrong.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FallbackSource = Literal["personalised", "copurchase", "popular_tier", "popular"]
DEFAULT_FALLBACK: tuple[FallbackSource, ...] = (
    "personalised",
    "copurchase",
    "popular_tier",
    "popular",
)


def norm_label(value: str) -> str:
    """Normalise a segment / band label so "At-Risk", "at risk" and "at_risk" compare equal."""
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


def check_template(template: str, allowed: tuple[str, ...]) -> str:
    """``template`` when each of its fields is a bare documented name (``{tier}``): no
    attribute or index access, no conversion or format spec, no positional ``{}``, so
    ``template.format(**values)`` cannot fail or reach into Python objects; else ValueError
    saying what is wrong."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        msg = f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        raise ValueError(msg) from None
    names = " or ".join("{" + n + "}" for n in allowed)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}}; use {names}")
        if spec or conversion is not None:
            raise ValueError(f"placeholder {{{name}}} takes no conversion or format spec")
    return template


def split_anchor_template(template: str) -> tuple[str, str] | None:
    """(head, tail) with ``template.format(anchor=x) == head + x + tail`` for every string x,
    or None when the template is not of that simple form."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return None
    fields = [i for i, (_, name, _, _) in enumerate(parts) if name is not None]
    if len(fields) != 1:
        return None
    i = fields[0]
    _, name, spec, conversion = parts[i]
    if name != "anchor" or spec or conversion is not None:
        return None
    return "".join(p[0] for p in parts[: i + 1]), "".join(p[0] for p in parts[i + 1 :])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerCondition(_Strict):
    """Which customers a boost or pin applies to; every given field must hold (AND)."""

    tier_at_least: str | None = None
    tier_at_most: str | None = None
    segment_in: list[str] | None = Field(default=None, min_length=1)
    churn_risk_at_least: float | None = Field(default=None, ge=0.0, le=1.0)
    clv_band_in: list[str] | None = Field(default=None, min_length=1)

    def tier_names(self) -> list[str]:
        return [t for t in (self.tier_at_least, self.tier_at_most) if t is not None]


class PriceBand(_Strict):
    """Item price relative to the customer's typical spend per item: min <= price/typical <= max."""

    min_ratio: float = Field(default=0.0, ge=0.0)
    max_ratio: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> PriceBand:
        if self.max_ratio is not None and self.max_ratio < self.min_ratio:
            raise ValueError("max_ratio must be >= min_ratio")
        return self


class ItemCondition(_Strict):
    """Which candidate items a boost applies to; every given field must hold (AND)."""

    premium: bool | None = None
    on_promo: bool | None = None
    exclusive: bool | None = None  # item has a min_tier above the lowest tier
    new_within_days: float | None = Field(default=None, gt=0)
    category_in: list[str] | None = Field(default=None, min_length=1)
    in_past_categories: bool | None = None  # category the customer used to buy (win-back)
    price_band: PriceBand | None = None
    source_in: list[FallbackSource] | None = Field(default=None, min_length=1)


class Boost(_Strict):
    """Multiply the score of matching items for matching customers, and say why."""

    name: str = Field(min_length=1)
    when: CustomerCondition = Field(default_factory=CustomerCondition)
    item: ItemCondition
    multiply: float = Field(gt=0.0, le=100.0)
    reason: str | None = None

    @field_validator("reason")
    @classmethod
    def _reason_placeholders(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v, ("tier", "category"))


class Pin(_Strict):
    """Put ``item_id`` at ``slot`` (1 = first) for matching customers when it is eligible."""

    name: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    slot: int = Field(ge=1, le=1000)
    when: CustomerCondition = Field(default_factory=CustomerCondition)
    reason: str = "featured"


class Eligibility(_Strict):
    """Tier gating: items with a ``min_tier`` are shown only to customers at or above it."""

    enforce_min_tier: bool = True
    exclusive_reason: str = "{min_tier} exclusive"

    @field_validator("exclusive_reason")
    @classmethod
    def _placeholders_ok(cls, v: str) -> str:
        return check_template(v, ("min_tier", "tier"))


class Exclusions(_Strict):
    """Items never shown: recently bought (per-category interval), out of stock, blocklisted."""

    recently_bought_days: float = Field(default=30.0, ge=0.0)
    repurchase_days: dict[str, float] = Field(default_factory=dict)
    out_of_stock: bool = True
    blocklist: list[str] = Field(default_factory=list)

    @field_validator("repurchase_days")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, days in v.items() if days < 0]
        if bad:
            raise ValueError(f"days must be >= 0 (category {bad[0]!r})")
        return v


class Diversity(_Strict):
    """At most ``max_per_category`` items of one category in the top k (None = no cap)."""

    max_per_category: int | None = Field(default=None, ge=1)


class Reasons(_Strict):
    """Reason texts for how a candidate was found."""

    personalised: str = "recommended for you"
    copurchase: str = "bought together with {anchor}"
    popular_tier: str = "popular in your tier"
    popular: str = "popular"

    @field_validator("copurchase")
    @classmethod
    def _one_anchor(cls, v: str) -> str:
        if split_anchor_template(v) is None:  # the API and the export render it as head+id+tail
            raise ValueError("must contain {anchor} exactly once and no other placeholder")
        return v


class RuleSet(_Strict):
    """A complete, validated rule set; ``version`` is the author's label for it."""

    version: str = Field(min_length=1)
    description: str = ""
    # None: the model's tiers (its manifest, from config/tiers.yaml); given, they must be the
    # model's (checked when rules and model meet: serving.rules.loader.check_tiers)
    tiers: list[str] | None = Field(default=None, min_length=1)
    eligibility: Eligibility = Field(default_factory=Eligibility)
    exclusions: Exclusions = Field(default_factory=Exclusions)
    boosts: list[Boost] = Field(default_factory=list)
    diversity: Diversity = Field(default_factory=Diversity)
    pins: list[Pin] = Field(default_factory=list)
    fallback: list[FallbackSource] = Field(
        default_factory=lambda: list(DEFAULT_FALLBACK), min_length=1
    )
    reasons: Reasons = Field(default_factory=Reasons)

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: object) -> object:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("tier names must be unique")
        return v

    @field_validator("fallback")
    @classmethod
    def _unique_sources(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each source may appear once")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> RuleSet:
        # Errors here are raised as RuleError so they name the rule, field and problem exactly.
        named: list[tuple[str, list[Boost | Pin]]] = [
            ("boosts", list(self.boosts)),
            ("pins", list(self.pins)),
        ]
        for kind, rules in named:
            seen: set[str] = set()
            for i, rule in enumerate(rules):
                if rule.name in seen:
                    raise RuleError(kind, i, rule.name, "name", "duplicate rule name")
                seen.add(rule.name)
                for fld in ("tier_at_least", "tier_at_most"):
                    tier = getattr(rule.when, fld)
                    if tier is not None and self.tiers is not None and tier not in self.tiers:
                        raise RuleError(
                            kind,
                            i,
                            rule.name,
                            f"when.{fld}",
                            f"unknown tier {tier!r}; tiers are {', '.join(self.tiers)}",
                        )
        slots: dict[tuple[int, str], str] = {}
        for i, pin in enumerate(self.pins):
            key = (pin.slot, pin.when.model_dump_json())
            if key in slots:
                raise RuleError(
                    "pins",
                    i,
                    pin.name,
                    "slot",
                    f"slot {pin.slot} is already pinned by {slots[key]!r} for the same customers",
                )
            slots[key] = pin.name
        return self


class RuleError(ValueError):
    """A rule file problem, with where it is: ``<kind>[i] 'name': field: problem``."""

    def __init__(
        self, kind: str | None, index: int | None, name: str | None, fld: str, problem: str
    ) -> None:
        self.kind, self.index, self.rule_name, self.field, self.problem = (
            kind,
            index,
            name,
            fld,
            problem,
        )
        if kind is None:
            super().__init__(f"rules file: {problem}")
            return
        where = kind
        if index is not None:
            where += f"[{index}]"
        if name:
            where += f" {name!r}"
        super().__init__(f"rule {where}: field {fld!r}: {problem}")
