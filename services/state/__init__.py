"""State: the Redis connection, the request store and grant ledger, the hash-chained audit log, the job queue and
scheduler seam, the shared rate limiter, the Teams address book, and the current policy file.

May use the pure core and the root modules (settings, clock, errors); never a client, the workflow or the tools.
"""
