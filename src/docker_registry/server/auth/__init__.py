"""Authentication and access rules (issue 8): Basic authentication against an htpasswd file of bcrypt entries
(`middleware.Auth`) or bearer tokens per Docker's token specification (`bearer.BearerAuth`, checked by
`tokens.TokenVerifier`), the built-in token service (`service.TokenService`, minting with `issuer.TokenIssuer`),
rules saying who may pull, push and delete which repositories, and a limit on failed logins per client.

Wired in by the composition root (`setup.create`) as a middleware after the error middleware, as the guard the
`100 Continue` answer runs first, and, with `auth.token.issue`, as the token service's route.
"""
