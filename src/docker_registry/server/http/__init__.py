"""The HTTP layer: aiohttp plumbing shared by every API (errors, bodies, ranges, routing) and the v2 API in `v2/`.
Handlers parse and answer; the registry logic below them decides."""
