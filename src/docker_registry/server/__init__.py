"""The docker-registry 3 server: HTTP APIs (v2, v1), metadata store, registry logic and the command line."""
