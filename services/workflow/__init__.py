"""The request workflow: the use cases behind every message, click, job and webhook (submit, vote, grant,
revoke, extend, receipts, reconcile, notify, evidence).

May use the pure core (`policies`), the card renderers (`cards`), `services.state` and the ports in
`services.ports`; never a concrete client (`services.clients`), the operator tools (`services.ops`) or an entry point.
"""
