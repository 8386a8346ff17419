"""Authentication and access rules (issue 8, first part): Basic authentication against an htpasswd file of bcrypt
entries, rules saying who may pull, push and delete which repositories, and a limit on failed logins per client.

Wired in by the composition root as a middleware after the error middleware, and as the guard the `100 Continue`
answer runs first. Token authentication comes later.
"""
