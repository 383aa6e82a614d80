"""What an update sends: the difference between the payload last written and the new one.

Pure and vendor-neutral: the target's `TargetRules` say where the connector's tags live and
whether an empty value unsets. Two promises to admins rest on it: an update that would change
nothing is never sent (removing a mapped field must not cost one call per customer), and a tag
key the mapping no longer writes is unset once rather than left behind on every customer.
Fields the mapping stops naming are otherwise left alone, as fields it never named are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.billing.base import TargetRules
from connector.mapping.compile import flatten


def is_unset(value: Any) -> bool:
    """None, "", an empty list and an object with nothing set all mean "not set"."""
    if isinstance(value, Mapping):
        return all(is_unset(v) for v in value.values())
    return value is None or value == "" or value == []


def same_value(old: Any, new: Any) -> bool:
    """Whether sending `new` over `old` changes nothing. Paths only in `old` do not count: an
    update leaves fields it does not name alone."""
    if is_unset(old) and is_unset(new):
        return True
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return bool(old == new)
    before = flatten(old)
    for path, value in flatten(new).items():
        prior = before.get(path)
        if prior != value and not (is_unset(prior) and is_unset(value)):
            return False
    return True


def diff_for_update(
    previous: Mapping[str, Any] | None, new: Mapping[str, Any], rules: TargetRules
) -> dict[str, Any] | None:
    """The payload to send to turn a customer written with `previous` into `new`, or None when
    nothing would change.

    - A top-level field is sent when its value changed, whole (an object such as `address` goes
      with all its mapped leaves, so no target has to merge a partial object).
    - Tags (`rules.tag_field`) are sent key by key: keys whose value changed, and keys the
      previous payload set that the new one no longer has, sent empty when `empty_unsets`
      (an empty value unsets a key). A target whose empty value does not unset gets its whole
      new tag map instead, which replaces the old one.
    - `previous` None (nothing known about what was written) sends `new` whole.

    The caller stores `new` (not the result) as what was written.
    """
    if previous is None:
        return dict(new)
    tag = rules.tag_field
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key == tag:
            continue
        if not same_value(previous.get(key), value):
            out[key] = value
    old_tags = previous.get(tag)
    new_tags = new.get(tag)
    old_tags = old_tags if isinstance(old_tags, Mapping) else {}
    new_tags = new_tags if isinstance(new_tags, Mapping) else {}
    changed = {k: v for k, v in new_tags.items() if not same_value(old_tags.get(k), v)}
    removed = [k for k, v in old_tags.items() if k not in new_tags and not is_unset(v)]
    if changed or removed:
        if rules.empty_unsets:
            out[tag] = {**changed, **dict.fromkeys(removed, "")}
        else:
            out[tag] = dict(new_tags)
    return out or None


def changed_paths(previous: Mapping[str, Any] | None, send: Mapping[str, Any]) -> list[str]:
    """The leaf paths of `send` (from `diff_for_update`) whose values differ from `previous`:
    what a plan reports as changed. An object is sent with all its mapped leaves, but only the
    leaves that changed are named (a new company is not a new city)."""
    if previous is None:
        return sorted(flatten(send))
    before = flatten(previous)
    return sorted(
        path
        for path, value in flatten(send).items()
        if not (before.get(path) == value or (is_unset(before.get(path)) and is_unset(value)))
    )
