"""Redis plumbing: clients, error translation, the subscriber, the pipelined writers, retry."""
