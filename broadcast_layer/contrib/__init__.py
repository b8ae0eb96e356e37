"""Optional extras outside the runtime core (development and demo helpers)."""
