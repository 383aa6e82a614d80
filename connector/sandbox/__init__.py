"""Local Salesforce and Stripe servers for the demo, the tests and offline mapping trials.

They bind 127.0.0.1 only, start in milliseconds, and speak enough of the real APIs that
simple-salesforce and stripe.StripeClient work against them unchanged. Production code never
imports this package; only the CLI (demo, sandbox) and the tests do.
"""
