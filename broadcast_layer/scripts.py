"""Lua scripts run by the layer; each is registered once per client (``register_script``)."""

# KEYS[1] in-flight counter of a process-specific channel.
# ARGV: capacity, expiry (ms), the owning node's pub/sub channel, payload.
# Returns -1 when the channel is full, else the number of subscribers reached.
SEND_TO_NODE = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local reached = redis.call('PUBLISH', ARGV[3], ARGV[4])
if reached == 0 then
  redis.call('DECR', KEYS[1])
end
return reached
"""

# KEYS[1] in-flight counter; ARGV[1] how many messages were received or dropped.
RELEASE = """
local left = redis.call('DECRBY', KEYS[1], ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
end
return left
"""

# KEYS[1] list of a normal channel. ARGV: capacity, expiry (ms), now (ms), payload.
# Each entry starts with its 13-digit send time in ms; expired entries are
# trimmed from the head before capacity is checked. Returns 1 if queued, 0 if full.
PUSH = """
local cutoff = tonumber(ARGV[3]) - tonumber(ARGV[2])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.sub(head, 1, 13)) > cutoff then break end
  redis.call('LPOP', KEYS[1])
end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
