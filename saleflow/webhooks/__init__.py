"""Webhooks (SPEC §8): journal entries POSTed to other systems.

`settings` judges what `webhook add` is given, `signing` computes the
signature header, `schedule` the back-off between attempts, and `delivery`
runs one bounded round of delivery (`deliver`), which `saleflow webhook
deliver` and the workers call.  The rows live in `saleflow.store.hooks`;
docs/webhooks.md is the design.
"""
