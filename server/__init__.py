"""vibescope server: HTTP/WebSocket service, state stores and the CLI."""
