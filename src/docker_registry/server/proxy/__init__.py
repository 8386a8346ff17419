"""The pull-through cache (docs/proxy.md): mirror mode, one upstream for the whole registry as Distribution's
`proxy.remoteurl`, or several upstreams under name prefixes beside local repositories (`proxy.upstreams`).

Cached content is ordinary content, stored through the registry logic: manifests and tags (`manifests`), blobs
fetched once however many clients ask at once (`flight`). `upstream` is the HTTP client with the upstream's
authentication, `targets` maps names to upstreams, `middleware` puts it in front of the v2 routes, and `setup`
assembles it per worker.
"""
