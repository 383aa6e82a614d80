"""billing-connector: keeps a billing system in step with activated Salesforce orders.

Salesforce is the source of truth. The connector creates or updates billing customers from
admin-written YAML mappings, records every Salesforce <-> billing cross-reference in a local
state store, and never merges, moves or deletes a billing customer.
"""

__version__ = "0.1.0"
