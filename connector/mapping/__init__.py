"""The YAML mapping language: which Salesforce fields become which billing fields, and how.

`spec` reads a mapping file into models (with file:line:column for every problem), `compile`
checks it against the target's schema and SOQL rules and builds the plan (`CustomerMapping`),
`transforms` holds the small pure functions a field's value runs through, and `updates` what an
update sends. No vendor rule lives here: each billing system's schema and rules come from
`connector.billing`. Nothing here talks to Salesforce or a billing system: the describe check
and links come in as callbacks.
"""

from connector.mapping.compile import (
    CustomerMapping,
    FieldPlan,
    check_mappings,
    diff_payloads,
    flatten,
    load_mapping,
    load_mappings,
    payload_hash,
)
from connector.mapping.spec import MappingErrors, Problem
from connector.mapping.updates import diff_for_update

__all__ = [
    "CustomerMapping",
    "FieldPlan",
    "MappingErrors",
    "Problem",
    "check_mappings",
    "diff_for_update",
    "diff_payloads",
    "flatten",
    "load_mapping",
    "load_mappings",
    "payload_hash",
]
