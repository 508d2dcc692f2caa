"""Reason templates (issue: hardening, item 2): a template either fails validation, naming
the field, or renders for every tier and category; none reaches into Python objects."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.rules.compiled import compile_rules
from serving.rules.models import RuleSet
from tests.rules.synth import item_table

PIECES = [
    "{tier}",
    "{category}",
    "{min_tier}",
    "{anchor}",
    "{}",
    "{0}",
    "{tier.__class__}",
    "{tier.__class__.__mro__}",
    "{category[0]}",
    "{tier!r}",
    "{tier:>99999999}",
    "{tier:{category}}",
    "{x}",
    "{",
    "}",
    "{{",
    "}}",
]
templates = st.lists(
    st.sampled_from(PIECES) | st.text("abc -!", min_size=1, max_size=4), max_size=5
).map("".join)
ITEMS = item_table(30, seed=3)


def _rules(boost_reason: str, exclusive: str) -> dict[str, object]:
    return {
        "version": "t",
        "eligibility": {"exclusive_reason": exclusive},
        "boosts": [
            {
                "name": "b",
                "when": {},
                "item": {"premium": True},
                "multiply": 1.2,
                "reason": boost_reason,
            }
        ],
    }


@settings(max_examples=300, deadline=None)
@given(boost_reason=templates, exclusive=templates)
def test_a_template_is_refused_at_load_or_renders(boost_reason: str, exclusive: str) -> None:
    try:
        rules = RuleSet.model_validate(_rules(boost_reason, exclusive))
    except ValidationError as exc:
        where = {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
        assert where <= {"boosts.0.reason", "eligibility.exclusive_reason"}, where
        return
    table = compile_rules(rules, ITEMS).reason_table  # renders every tier x category
    assert not any("<class" in r or "<built-in" in r for r in table)
    expected = {
        boost_reason.format(tier=t, category=c) for t in ITEMS.tier_names for c in ITEMS.categories
    }
    assert expected <= set(table)


@pytest.mark.parametrize(
    "template",
    ["{tier.__class__.__mro__}", "{}", "{0}", "{tier!r}", "{tier:>99999999}", "{x}", "{"],
)
def test_the_reported_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValidationError, match=r"boosts\.0\.reason"):
        RuleSet.model_validate(_rules(template, "{min_tier} exclusive"))
