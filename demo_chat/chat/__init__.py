"""The chat app: room pages over HTTP and a WebSocket consumer per connected browser."""
