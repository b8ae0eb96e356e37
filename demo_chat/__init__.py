"""The demo project: a multi-room chat served by several Daphne processes over one Redis."""
