"""
Authentication and authorization: tokens, roles and ACL rules, tenants with quotas.

Pure (no IO, no clock): the replicated state machine applies auth commands and checks
writes at apply time; the raft worker and the read workers check requests with the same
code against the same replicated tables. docs/security.md is the user-facing account.
"""
