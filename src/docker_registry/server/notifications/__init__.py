"""Notifications (issue 13): Distribution's webhook events, kept in the metadata store until delivered.

- `envelope`: the JSON an endpoint receives, exactly as CNCF Distribution sends it.
- `recorder`: turns what the registry logic reports into event records (changes: written in the change's own
  transaction; pulls: batched off the request path), with the request each came from.
- `delivery`: the one deliverer of a registry (whoever holds the lease in the database) sends each endpoint its
  events in order, retrying with backoff, and moves the endpoint's cursor after each.
- `stats`: plain counters (queue depth, deliveries, failures, dropped) for metrics.
- `setup`: what the composition root wires in.
"""
