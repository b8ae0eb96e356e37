"""The wire format: key and channel names, Lua scripts, the calls built from them, input rules."""
