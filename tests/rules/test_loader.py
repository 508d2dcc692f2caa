"""Rule files: validation errors name the rule, the field and the problem; CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serving.cli_rules import rules_app
from serving.rules.loader import DEFAULT_RULES_FILE, load_rules, parse_rules, parse_rules_text
from serving.rules.models import RuleError


def _default() -> dict:
    data = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["boosts"][1].__setitem__("multiply", -2),
            ["boosts[1]", "'premium_for_gold_and_up'", "'multiply'", "greater than 0"],
        ),
        (
            lambda d: d["boosts"][0]["when"].__setitem__("tier_at_least", "diamond"),
            ["boosts[0]", "'tier_exclusives_first'", "when.tier_at_least", "unknown tier"],
        ),
        (
            lambda d: d["boosts"][2].__setitem__("multipy", 2),
            ["boosts[2]", "'early_access_new_arrivals'", "'multipy'", "unknown field"],
        ),
        (
            lambda d: d["boosts"][3].pop("item"),
            ["boosts[3]", "'promotions_for_regulars'", "'item'", "missing"],
        ),
        (
            lambda d: d["boosts"].append({**d["boosts"][0]}),
            ["'tier_exclusives_first'", "'name'", "duplicate"],
        ),
        (
            lambda d: d["diversity"].__setitem__("max_per_category", 0),
            ["diversity", "max_per_category", "greater than or equal to 1"],
        ),
        (
            lambda d: d.__setitem__("fallback", ["popular", "popular"]),
            ["fallback", "once"],
        ),
        (
            lambda d: d.__setitem__(
                "pins", [{"name": "launch", "item_id": "x", "slot": 0, "reason": "new"}]
            ),
            ["pins[0]", "'launch'", "'slot'", "greater than or equal to 1"],
        ),
        (
            lambda d: d["boosts"][4].__setitem__("reason", "hi {name}"),
            ["boosts[4]", "'win_back'", "'reason'", "placeholder"],
        ),
        (lambda d: d.pop("version"), ["'version'", "missing"]),
        *(
            (
                lambda d, t=t: d.setdefault("reasons", {}).__setitem__("copurchase", t),
                ["reasons", "copurchase", "{anchor} exactly once"],
            )
            for t in ("bought together", "{anchor} and {anchor}", "with {item}", "{anchor!r}", "{")
        ),
    ],
)
def test_bad_rule_names_rule_field_problem(mutate, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    data = _default()
    mutate(data)
    with pytest.raises(RuleError) as exc:
        parse_rules(data)
    msg = str(exc.value)
    assert "\n" not in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_bad_yaml_and_non_mapping() -> None:
    with pytest.raises(RuleError, match="rules file: not valid YAML at line 3"):
        parse_rules_text("version: 1\nboosts: [\n")
    with pytest.raises(RuleError, match="mapping"):
        parse_rules_text("- a\n- b\n")


def test_hash_ignores_comments_and_key_order() -> None:
    a = parse_rules_text("version: v1\ndiversity: {max_per_category: 2}\n")
    b = parse_rules_text("# hello\ndiversity:\n  max_per_category: 2\nversion: v1\n")
    c = parse_rules_text("version: v1\ndiversity: {max_per_category: 3}\n")
    assert a.version == b.version
    assert a.version != c.version


def test_rules_check_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(rules_app, ["check", str(DEFAULT_RULES_FILE)])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["valid"] is True
    assert summary["version"] == load_rules(DEFAULT_RULES_FILE).version

    data = _default()
    data["boosts"][4]["multiply"] = "lots"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = runner.invoke(rules_app, ["check", str(bad)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "win_back" in err and "multiply" in err

    missing = runner.invoke(rules_app, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr


def test_copurchase_template_with_braces_renders_alike_everywhere() -> None:
    """Escaped braces around the anchor: the API's ``format`` and the export's split agree."""
    from serving.rules.models import split_anchor_template

    data = _default()
    data.setdefault("reasons", {})["copurchase"] = "a {{set}} with {anchor} }}"
    template = parse_rules(data).rules.reasons.copurchase
    split = split_anchor_template(template)
    assert split is not None
    assert split[0] + "i42" + split[1] == template.format(anchor="i42") == "a {set} with i42 }"
