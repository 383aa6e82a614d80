"""`diff_for_update`: what an update sends, table-tested in memory. An update that changes
nothing is never sent; a tag key the mapping stopped writing is unset once (sent empty where
the target's empty value unsets, the whole new tag map where it does not); fields the mapping
stopped naming are otherwise left alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from memory_target import MEMORY_RULES, MemoryTarget

from connector.billing.stripe import RULES as STRIPE_RULES
from connector.mapping import diff_for_update

TAGS = {"salesforce_account_id": "001A", "salesforce_org_id": "00DX"}
BASE: dict[str, Any] = {
    "name": "Acme",
    "phone": "+4930123",
    "address": {"line1": "1 Main St", "city": "Berlin", "country": "DE"},
    "metadata": {**TAGS, "region": "EMEA", "tier": "gold"},
}


def without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    node = out
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return out


def with_(d: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]] = [
    ("identical payloads send nothing", BASE, BASE, None),
    ("a removed plain field sends nothing (left alone)", BASE, without(BASE, "phone"), None),
    ("a removed address line sends nothing", BASE, without(BASE, "address", "line1"), None),
    (
        "unset written two ways is unchanged",
        with_(BASE, "", "phone"),
        with_(BASE, None, "phone"),
        None,
    ),
    (
        "a removed tag key is unset once",
        BASE,
        without(BASE, "metadata", "tier"),
        {"metadata": {"tier": ""}},
    ),
    (
        "a tag key that was already empty is not unset again",
        with_(BASE, "", "metadata", "tier"),
        without(BASE, "metadata", "tier"),
        None,
    ),
    (
        "a changed tag value sends only that key",
        BASE,
        with_(BASE, "APAC", "metadata", "region"),
        {"metadata": {"region": "APAC"}},
    ),
    (
        "a changed scalar sends only it",
        BASE,
        with_(BASE, "Acme Corp", "name"),
        {"name": "Acme Corp"},
    ),
    (
        "a changed address leaf sends the whole address",
        BASE,
        with_(BASE, "Potsdam", "address", "city"),
        {"address": {"line1": "1 Main St", "city": "Potsdam", "country": "DE"}},
    ),
    (
        "an object unset is sent as empty",
        with_(BASE, {"name": "Acme", "address": {"city": "Berlin"}}, "shipping"),
        with_(BASE, "", "shipping"),
        {"shipping": ""},
    ),
    (
        "an object that stays unset sends nothing",
        with_(BASE, "", "shipping"),
        with_(BASE, "", "shipping"),
        None,
    ),
    (
        "a field cleared in Salesforce is sent empty",
        BASE,
        with_(BASE, "", "phone"),
        {"phone": ""},
    ),
    (
        "removed and changed together go in one update",
        BASE,
        with_(without(BASE, "metadata", "tier"), "x", "name"),
        {"name": "x", "metadata": {"tier": ""}},
    ),
    ("nothing known about what was written sends everything", None, BASE, BASE),
]


@pytest.mark.parametrize(("case", "previous", "new", "sent"), CASES, ids=[c[0] for c in CASES])
def test_diff_for_update_on_a_target_where_empty_unsets(
    case: str, previous: dict[str, Any] | None, new: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    assert diff_for_update(previous, new, STRIPE_RULES) == sent


def test_where_empty_does_not_unset_the_whole_new_tag_map_replaces_the_old() -> None:
    rules = replace(MEMORY_RULES, tag_field="meta_data", empty_unsets=False)
    old = {"name": "Acme", "meta_data": {**TAGS, "tier": "gold"}}
    new = {"name": "Acme", "meta_data": dict(TAGS)}
    assert diff_for_update(old, new, rules) == {"meta_data": dict(TAGS)}
    assert diff_for_update(new, new, rules) is None


def test_the_tag_field_comes_from_the_rules_not_from_the_name_metadata() -> None:
    rules = replace(MEMORY_RULES, tag_field="meta_data")
    old = {"metadata": {"a": "1"}, "meta_data": {"a": "1"}}
    new = {"metadata": {}, "meta_data": {}}
    # `metadata` is an ordinary object for this target: a key it no longer has is left alone.
    assert diff_for_update(old, new, rules) == {"meta_data": {"a": ""}}


def test_applying_the_diff_gives_the_customer_the_new_payload_on_a_port_target() -> None:
    target = MemoryTarget()
    cid = target.create_customer(BASE, idempotency_key="k0")
    new = with_(without(BASE, "metadata", "tier"), "Potsdam", "address", "city")
    sent = diff_for_update(BASE, new, target.rules)
    assert sent is not None
    target.update_customer(cid, sent, idempotency_key="k1")
    assert target.customers[cid] == new
    # Written once: the next run with the same mapping sends nothing.
    assert diff_for_update(new, new, target.rules) is None
