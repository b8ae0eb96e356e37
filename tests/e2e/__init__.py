"""End-to-end tests: the demo project in real Daphne processes sharing one Redis."""
