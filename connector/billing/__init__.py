"""Billing targets behind one protocol (`base.BillingTarget`). A new target is one new module."""
