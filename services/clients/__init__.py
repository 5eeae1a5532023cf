"""Clients of the outside world: Microsoft Graph, Entra tokens (msal), the Bot Connector, the ticketing systems
(ServiceNow, Freshservice, Halo) and the HTTP plumbing they share. They implement the ports in `services.ports`.

May use `services.state` (the shared rate limiter, caches in Redis) and the root modules; never the workflow,
the operator tools or an entry point.
"""
