"""A mapping's fingerprint follows its meaning, not its layout; payload helpers are canonical."""

from __future__ import annotations

from pathlib import Path

from connector.mapping import diff_payloads, flatten, load_mapping, payload_hash

BLOCK = """\
target: customer
fields:
  name:
    from: Account.Name
    transforms: [trim, {truncate: 256}]
  metadata.region: {from: Account.Region__c, default: "unknown"}
  email:
    from: [Order.BillToContact.Email, Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email]
    transforms: [trim, lower]
  tax_exempt:
    from: Account.Tax__c
    transforms: [{lookup: {map: {Exempt: exempt, Reverse: reverse}, default: none}}]
"""

REORDERED = """\
# Same mapping: keys in another order, other spacing, comments, flow style.
fields:
  tax_exempt:
    transforms:
      - lookup:
          default: none
          map: {Reverse: reverse, Exempt: exempt}
    from: Account.Tax__c
  email:
    transforms: [trim, lower]   # why: lower case avoids needless updates
    from:
      - Order.BillToContact.Email
      - Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email
  metadata.region:
    default: unknown
    from: Account.Region__c

  name: {transforms: [trim, truncate: 256], from: "Account.Name"}
target: customer
"""


def fingerprint(tmp_path: Path, text: str, name: str = "customer.yaml") -> str:
    file = tmp_path / name
    file.write_text(text, encoding="utf-8")
    return load_mapping(file).fingerprint


def test_fingerprint_ignores_key_order_whitespace_and_comments(tmp_path: Path) -> None:
    first = fingerprint(tmp_path, BLOCK, "a.yaml")
    assert len(first) == 64
    assert fingerprint(tmp_path, REORDERED, "b.yaml") == first


def test_fingerprint_changes_with_the_mapping(tmp_path: Path) -> None:
    base = fingerprint(tmp_path, BLOCK)
    changes = [
        BLOCK.replace("{truncate: 256}", "{truncate: 200}"),
        BLOCK.replace("[trim, lower]", "[lower, trim]"),  # order of transforms matters
        BLOCK.replace(
            "[Order.BillToContact.Email, Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email]",
            "[Order.SBQQ__Quote__r.SBQQ__PrimaryContact__r.Email, Order.BillToContact.Email]",
        ),
        BLOCK.replace('default: "unknown"', 'default: "n/a"'),
        BLOCK.replace("metadata.region", "metadata.area"),
        BLOCK.replace("Reverse: reverse", "Reverse charge: reverse"),
        BLOCK + "  description: {value: x}\n",
    ]
    seen = {base}
    for text in changes:
        changed = fingerprint(tmp_path, text)
        assert changed not in seen, text
        seen.add(changed)


def test_payload_hash_ignores_key_order() -> None:
    a = {
        "name": "Acme",
        "address": {"city": "SF", "line1": "1 Main"},
        "metadata": {"a": "1", "b": "2"},
    }
    b = {
        "metadata": {"b": "2", "a": "1"},
        "address": {"line1": "1 Main", "city": "SF"},
        "name": "Acme",
    }
    assert payload_hash(a) == payload_hash(b)
    assert payload_hash(a) != payload_hash({**a, "name": "Acme Inc"})


def test_flatten_gives_dotted_paths() -> None:
    payload = {
        "name": "A",
        "address": {"city": "SF"},
        "shipping": {"address": {"line1": "x"}},
        "preferred_locales": ["en"],
    }
    assert flatten(payload) == {
        "name": "A",
        "address.city": "SF",
        "shipping.address.line1": "x",
        "preferred_locales": ["en"],
    }


def test_diff_lists_changed_paths_and_treats_unset_alike() -> None:
    old = {
        "name": "A",
        "email": None,
        "address": {"city": "SF", "line1": "1"},
        "metadata": {"x": "1"},
    }
    new = {
        "name": "A",
        "email": "",
        "address": {"city": "LA", "line1": "1"},
        "metadata": {"x": "1", "y": "2"},
    }
    assert diff_payloads(old, new) == ["address.city", "metadata.y"]
    assert diff_payloads(None, {"name": "A", "address": {"city": "SF"}}) == ["address.city", "name"]
    assert diff_payloads(new, new) == []
    # Unsetting shipping as a whole is one change.
    assert diff_payloads(
        {"shipping": {"name": "A", "address": {"city": "X"}}}, {"shipping": ""}
    ) == ["shipping"]
