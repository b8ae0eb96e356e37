"""Lua scripts run by the layer, and :class:`Call`: one script call plus how to read its reply.

Each script is registered once per client (``register_script``) and run by EVALSHA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One script call and the function that turns its reply into a result."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], T_co]

    @property
    def idempotent(self) -> bool:
        """Whether running the call twice leaves Redis as running it once (see IDEMPOTENT)."""
        return self.script in IDEMPOTENT


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


def _registry_script(body: str) -> str:
    return _PRELUDE + body


# -- the room registry -----------------------------------------------------------------
# Shared Lua helpers, prepended to each registry script. A membership lives in two
# places: the group's sorted set (member -> join time) and the record of the channel
# in its node's hash (JSON: {"t": opened, "g": {group: joined}, "m": metadata}).
# Two index sorted sets list the rooms: by name (all scores 0) and by size.
_PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function decode(raw)
  local record = raw and cjson.decode(raw) or {}
  if type(record.g) ~= 'table' then record.g = {} end
  return record
end
local function count_leave(by_size, by_name, group)
  local size = tonumber(redis.call('ZINCRBY', by_size, -1, group))
  if size <= 0 then
    redis.call('ZREM', by_size, group)
    redis.call('ZREM', by_name, group)
  end
end
local function count_node_leave(nodes_key, node)
  if tonumber(redis.call('HINCRBY', nodes_key, node, -1)) <= 0 then
    redis.call('HDEL', nodes_key, node)
  end
end
local function leave(prefix, by_size, by_name, group, channel, node)
  local members = prefix .. ':members:{' .. group .. '}'
  if redis.call('ZREM', members, channel) == 1 then
    count_leave(by_size, by_name, group)
    count_node_leave(members .. ':nodes', node)
  end
end
local function forget_channels(prefix, by_size, by_name, channels_key, node)
  local all = redis.call('HGETALL', channels_key)
  for i = 1, #all, 2 do
    for group, _ in pairs(decode(all[i + 1]).g) do
      leave(prefix, by_size, by_name, group, all[i], node)
    end
  end
  redis.call('DEL', channels_key)
end
local function retire(prefix, nodes_key, by_size, by_name, ids)
  for _, id in ipairs(ids) do
    forget_channels(prefix, by_size, by_name, prefix .. ':node:{' .. id .. '}:channels', id)
    redis.call('DEL', prefix .. ':node:{' .. id .. '}')
    redis.call('ZREM', nodes_key, id)
  end
  return ids
end
local function reap_dead(prefix, nodes_key, by_size, by_name, ttl, max)
  local dead = redis.call('ZRANGEBYSCORE', nodes_key, '-inf', '(' .. (now() - ttl),
                          'LIMIT', 0, max)
  return retire(prefix, nodes_key, by_size, by_name, dead)
end
"""

# KEYS: members(G), rooms by-size, rooms by-name, node channels(N), member nodes(G).
# ARGV: group, channel, node. Returns 1 for a new membership, 0 for a refreshed one.
JOIN = _registry_script("""
local t = now()
local new = redis.call('ZADD', KEYS[1], t, ARGV[2])
if new == 1 then
  redis.call('ZINCRBY', KEYS[2], 1, ARGV[1])
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
  redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
end
local record = decode(redis.call('HGET', KEYS[4], ARGV[2]))
record.t = record.t or t
record.g[ARGV[1]] = t
redis.call('HSET', KEYS[4], ARGV[2], cjson.encode(record))
return new
""")

# Same KEYS and ARGV as JOIN. Returns 1 if a membership was removed.
LEAVE = _registry_script("""
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
if removed == 1 then
  count_leave(KEYS[2], KEYS[3], ARGV[1])
  count_node_leave(KEYS[5], ARGV[3])
end
local raw = redis.call('HGET', KEYS[4], ARGV[2])
if raw then
  local record = decode(raw)
  record.g[ARGV[1]] = nil
  redis.call('HSET', KEYS[4], ARGV[2], cjson.encode(record))
end
return removed
""")

# KEYS: node channels(N). ARGV: channel. Records a new channel (never overwrites).
OPEN = _registry_script("""
return redis.call('HSETNX', KEYS[1], ARGV[1], cjson.encode({t = now()}))
""")

# KEYS: node channels(N), rooms by-size, rooms by-name. ARGV: prefix, channel, node.
# Removes the channel from every group and forgets it.
CLOSE = _registry_script("""
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then return 0 end
for group, _ in pairs(decode(raw).g) do
  leave(ARGV[1], KEYS[2], KEYS[3], group, ARGV[2], ARGV[3])
end
return redis.call('HDEL', KEYS[1], ARGV[2])
""")

# KEYS: node channels(N). ARGV: channel, metadata JSON. Attaches metadata to a known
# channel, kept as the JSON text (cjson would round numbers to 14 digits); 0 if unknown.
SET_METADATA = _registry_script("""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = decode(raw)
record.m = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
return 1
""")

# KEYS: node(N), nodes index. ARGV: id, host, pid, started, channels, prefix, ttl (s).
# Returns 1 if the record has a generation, else 0: the node's records may be missing
# (a new node, or Redis lost them) and need a re-assert, which writes a generation
# (see REASSERT_SWAP below).
HEARTBEAT = _registry_script("""
local t = now()
local had = redis.call('HGET', KEYS[1], 'gen') and 1 or 0
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'host', ARGV[2], 'pid', ARGV[3],
           'started', ARGV[4], 'heartbeat', t, 'channels', ARGV[5], 'prefix', ARGV[6])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[7]) * 1000))
redis.call('ZADD', KEYS[2], t, ARGV[1])
return had
""")

# KEYS: nodes index, rooms by-size, rooms by-name. ARGV: prefix, ttl (s), max, [node ids].
# Without node ids, reaps up to `max` nodes whose heartbeat is older than the TTL;
# with them, retires exactly those (a clean shutdown). Returns the reaped ids.
REAP = _registry_script("""
if #ARGV > 3 then
  local ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  return retire(ARGV[1], KEYS[1], KEYS[2], KEYS[3], ids)
end
return reap_dead(ARGV[1], KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]))
""")

# KEYS: members(G), member nodes(G). ARGV: group_expiry (s).
# Returns [unexpired members, nodes holding members].
ROOM = _registry_script("""
local size = redis.call('ZCOUNT', KEYS[1], '(' .. (now() - tonumber(ARGV[1])), '+inf')
return {size, redis.call('HLEN', KEYS[2])}
""")

# KEYS: members(G). ARGV: group_expiry (s). Counts unexpired memberships.
ROOM_SIZE = _registry_script("""
return redis.call('ZCOUNT', KEYS[1], '(' .. (now() - tonumber(ARGV[1])), '+inf')
""")

# KEYS: member nodes(G), nodes index. ARGV: ttl (s).
# Returns flat [node, members it holds] for the nodes of the group that are alive.
MEMBERS_PER_NODE = _registry_script("""
local cutoff = now() - tonumber(ARGV[1])
local counts = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #counts, 2 do
  local beat = redis.call('ZSCORE', KEYS[2], counts[i])
  if beat and tonumber(beat) > cutoff then
    out[#out + 1] = counts[i]; out[#out + 1] = counts[i + 1]
  end
end
return out
""")

# KEYS: members(G), nodes index. ARGV: prefix, group_expiry (s), ttl (s), offset, count
# (-1: all), in join order.
# Returns flat [channel, joined, node, metadata JSON] for unexpired members of live nodes
# (normal channels, which belong to no node, come with node "" and no metadata).
MEMBERS = _registry_script("""
local t = now()
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (t - tonumber(ARGV[2])), '+inf',
                           'WITHSCORES', 'LIMIT', tonumber(ARGV[4]), tonumber(ARGV[5]))
local alive, out = {}, {}
for i = 1, #entries, 2 do
  local channel = entries[i]
  local node = string.match(channel, '([^.!]+)!')
  if node == nil then
    out[#out + 1] = channel; out[#out + 1] = entries[i + 1]
    out[#out + 1] = ''; out[#out + 1] = ''
  else
    if alive[node] == nil then
      local beat = redis.call('ZSCORE', KEYS[2], node)
      alive[node] = beat ~= false and tonumber(beat) > t - tonumber(ARGV[3])
    end
    if alive[node] then
      local record = redis.call('HGET', ARGV[1] .. ':node:{' .. node .. '}:channels', channel)
      local metadata = record and cjson.decode(record).m
      out[#out + 1] = channel; out[#out + 1] = entries[i + 1]
      out[#out + 1] = node; out[#out + 1] = type(metadata) == 'string' and metadata or ''
    end
  end
end
return out
""")

# KEYS: node channels(N). ARGV: channel. Returns [now, record JSON or ''].
CHANNEL = _registry_script("""
return {tostring(now()), redis.call('HGET', KEYS[1], ARGV[1]) or ''}
""")

# KEYS: nodes index. ARGV: prefix, ttl (s). Returns flat [id, HGETALL...] lists of live nodes.
NODES = _registry_script("""
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now() - tonumber(ARGV[2])), '+inf')
local out = {}
for _, id in ipairs(live) do
  local fields = redis.call('HGETALL', ARGV[1] .. ':node:{' .. id .. '}')
  if #fields > 0 then out[#out + 1] = fields end
end
return out
""")

# A room glob, compiled by broadcast_layer._protocol.globs into tokens: '*', '?', '=c' (one
# character), '+ranges' / '-ranges' (a class or a negated one; ranges are pairs of first
# and last byte). glob_match(name, glob) first rejects, at C speed, a name that lacks the
# glob's literal start, literal end or any literal run between wildcards, or whose length
# cannot fit; then runs the classic iterative wildcard match, which on a mismatch
# backtracks only to the last '*' seen, never further: one name costs at most
# (#name + 1) * (#tokens + 1) steps whatever the glob (a Lua pattern with '.*' per '*'
# backtracks exponentially). It returns whether the name matches and the steps taken.
GLOB = """
local STAR, ANY, ONE, IN, NOT_IN = 1, 2, 3, 4, 5
local function glob_compile(tokens)
  local g = {kinds = {}, data = {}, runs = {}, head = '', tail = '', fixed = 0, star = false}
  local run, run_start = {}, 1
  local function end_run(i)  -- the literal run before token i ends
    if #run > 0 then
      local text = table.concat(run)
      if run_start == 1 then g.head = text end
      if i > #tokens then g.tail = text end
      if run_start > 1 and i <= #tokens then g.runs[#g.runs + 1] = text end
    end
    run, run_start = {}, i + 1
  end
  for i, token in ipairs(tokens) do
    local op = string.sub(token, 1, 1)
    if op == '=' then
      g.kinds[i] = ONE; g.data[i] = string.byte(token, 2)
      run[#run + 1] = string.sub(token, 2, 2)
    else
      end_run(i)
      if op == '*' then g.kinds[i] = STAR; g.star = true
      elseif op == '?' then g.kinds[i] = ANY
      else
        g.kinds[i] = op == '+' and IN or NOT_IN
        g.data[i] = {string.byte(token, 2, -1)}
      end
    end
    if op ~= '*' then g.fixed = g.fixed + 1 end
  end
  end_run(#tokens + 1)
  return g
end
local function glob_class(ranges, c)
  for j = 1, #ranges, 2 do
    if c >= ranges[j] and c <= ranges[j + 1] then return true end
  end
  return false
end
local function glob_match(name, g)
  local len = #name
  if len < g.fixed or (len > g.fixed and not g.star)
     or string.sub(name, 1, #g.head) ~= g.head
     or (g.tail ~= '' and string.sub(name, -#g.tail) ~= g.tail) then
    return false, 1
  end
  for _, run in ipairs(g.runs) do
    if not string.find(name, run, 1, true) then return false, 1 end
  end
  local kinds, data, last = g.kinds, g.data, #g.kinds
  local n, p, star, mark, steps = 1, 1, 0, 0, 1
  while n <= len do
    steps = steps + 1
    local kind = kinds[p]
    if kind == STAR then
      if p == last then return true, steps end  -- a final '*' takes the rest
      star, mark, p = p, n, p + 1
    else
      local hit = false
      if kind == ONE then hit = string.byte(name, n) == data[p]
      elseif kind == ANY then hit = true
      elseif kind ~= nil then hit = glob_class(data[p], string.byte(name, n)) == (kind == IN)
      end
      if hit then
        n, p = n + 1, p + 1
      elseif star > 0 then
        mark = mark + 1
        n, p = mark, star + 1
      else
        return false, steps
      end
    end
  end
  while kinds[p] == STAR do p = p + 1 end
  return p > last, steps
end
"""

# KEYS: rooms by-name, rooms by-size, nodes index. ARGV: order ("name"|"size"), offset,
# count, name budget, step budget, prefix, node TTL (s), literal start of the glob ("" for
# none), the first string after every name with that start, glob tokens (none: no filter).
# Reaps up to 10 dead nodes first, so their members are not counted (one round trip for
# both). By name with a literal start, only that start's rank range of the index is read
# (two ZLEXCOUNTs find it; ZRANGEBYLEX's LIMIT would walk the offset). A call stops after
# examining `name budget` names or spending `step budget` matcher steps.
# Returns [total, next offset or -1, name, size, nodes holding members, ...].
ROOMS = _registry_script(
    GLOB
    + """
local by_name, by_size = KEYS[1], KEYS[2]
reap_dead(ARGV[6], KEYS[3], by_size, by_name, tonumber(ARGV[7]), 10)  -- dead nodes' members out
local order, pos, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local name_budget, step_budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens = {}
for i = 10, #ARGV do tokens[#tokens + 1] = ARGV[i] end
local filtered = #tokens > 0
local glob = glob_compile(tokens)
local total = redis.call('ZCARD', by_name)
local out = {total, -1}
local stop = total
if filtered and order == 'name' and ARGV[8] ~= '' then
  local first = redis.call('ZLEXCOUNT', by_name, '-', '(' .. ARGV[8])
  stop = redis.call('ZLEXCOUNT', by_name, '-', '(' .. ARGV[9])
  if pos < first then pos = first end
end
local found, scanned, steps = 0, 0, 0
while found < count and pos < stop and scanned < name_budget and steps < step_budget do
  local want = math.min(filtered and 500 or (count - found), stop - pos)
  local names, sizes = {}, {}
  if order == 'size' then
    local chunk = redis.call('ZREVRANGE', by_size, pos, pos + want - 1, 'WITHSCORES')
    for i = 1, #chunk, 2 do names[#names + 1] = chunk[i]; sizes[#sizes + 1] = chunk[i + 1] end
  else
    names = redis.call('ZRANGE', by_name, pos, pos + want - 1)
  end
  if #names == 0 then stop = pos; break end
  for i, name in ipairs(names) do
    pos = pos + 1
    scanned = scanned + 1
    local hit, cost = true, 0
    if filtered then hit, cost = glob_match(name, glob) end
    steps = steps + cost
    if hit then
      out[#out + 1] = name
      out[#out + 1] = sizes[i] or redis.call('ZSCORE', by_size, name) or '0'
      out[#out + 1] = redis.call('HLEN', ARGV[6] .. ':members:{' .. name .. '}:nodes')
      found = found + 1
      if found == count then break end
    end
    if scanned >= name_budget or steps >= step_budget then break end
  end
end
if pos < stop then out[2] = pos end
return out
"""
)

# KEYS: any hash. Returns HGETALL (a script so every registry read runs the same way).
HGETALL = """
return redis.call('HGETALL', KEYS[1])
"""


# -- history groups: a stream per group, entry ids 0-<offset> ---------------------------
# KEYS: history stream(G), history meta(G) (same hash tag: one slot). The meta hash holds
# the group's epoch and top offset; a missing one (never written, expired, or lost with
# Redis's data) gets a new epoch and drops a stream left without it, so offsets of one
# epoch always name the same messages.
_HISTORY_META = """
local function history_meta(stream, meta, fresh_epoch, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = fresh_epoch
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
    redis.call('PEXPIRE', meta, ttl)
  end
  return epoch
end
"""

# KEYS: history stream(G), history meta(G). ARGV: size, ttl (ms), pub/sub channel,
# payload, a fresh epoch (used only when the group has none). Appends the payload as the
# next offset, trims to about `size` entries, and publishes '~<offset> <epoch>\n<payload>'
# in the same step. Returns [offset, epoch, subscribers reached].
HISTORY_APPEND = (
    _HISTORY_META
    + """
local epoch = history_meta(KEYS[1], KEYS[2], ARGV[5], ARGV[2])
local offset = string.format('%d', redis.call('HINCRBY', KEYS[2], 'top', 1))
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. offset, 'm', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local frame = '~' .. offset .. ' ' .. epoch .. '\\n' .. ARGV[4]
-- The group's one publish (sharded pub/sub: SPUBLISH, same slot as the keys).
local reached = redis.call('PUBLISH', ARGV[3], frame)
return {tonumber(offset), epoch, reached}
"""
)

# KEYS: history stream(G), history meta(G). ARGV: since (-1: the latest), limit, a fresh
# epoch, ttl (ms), the epoch the caller knows ('' for none). Reads up to `limit` entries
# after `since`, or the latest `limit` when since is -1 or the caller's epoch is not the
# group's (then `since` means nothing). Creates the meta hash when missing, so the epoch
# a reader sees is the one the next append uses.
# Returns [epoch, top offset, first kept offset, latest?, entries ([id, [field, value]])].
HISTORY_READ = (
    _HISTORY_META
    + """
local epoch = history_meta(KEYS[1], KEYS[2], ARGV[3], ARGV[4])
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = top + 1
if #head > 0 then first = tonumber(string.sub(head[1][1], 3)) end
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if since < 0 or (ARGV[5] ~= '' and ARGV[5] ~= epoch) then
  return {epoch, top, first, 1, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)}
end
local start = '0-' .. string.format('%d', since + 1)
return {epoch, top, first, 0, redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', limit)}
"""
)

# -- durable worker channels: a stream per channel read by one consumer group ----------
# KEYS: durable stream(C). ARGV: capacity, payload, consumer group. Creates the stream and
# its group on first use (reading from the first entry). Returns 1 if queued, 0 if full
# (the stream holds only messages not yet acknowledged).
DURABLE_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[3], '$', 'MKSTREAM')
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
return 1
"""

# KEYS: durable stream(C). ARGV: consumer group, consumer, claim_after (ms), idle time (ms)
# after which a consumer with nothing pending is deleted, then entry ids to acknowledge.
# Acknowledges (and deletes) the process's previous messages, then takes the
# oldest message another consumer left unacknowledged for claim_after (XAUTOCLAIM), else
# the next new one. Returns [id, payload] or [] when there is none.
DURABLE_NEXT = """
for i = 5, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
end
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info.pending == 0 and info.idle > tonumber(ARGV[4]) and info.name ~= ARGV[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
  end
end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', 1)
local entry = claimed[2][1]
if not entry then
  local new = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                         'STREAMS', KEYS[1], '>')
  entry = new and new[1][2][1]
end
if not entry then return {} end
return {entry[1], entry[2][2]}
"""

# KEYS: durable stream(C). ARGV: consumer group, entry ids. Acknowledges and deletes them
# (a clean close). Returns how many were acknowledged.
DURABLE_ACK = """
local acked = 0
for i = 2, #ARGV do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return acked
"""

# -- the re-assert: a node rewrites its records as its memory holds them ---------------
# Sent as one pipeline through the node's ordered writer: REASSERT_BEGIN, one
# REASSERT_CHANNELS per chunk of channels, REASSERT_SWAP (which writes the generation),
# one REASSERT_GROUPS per chunk of groups, then HEARTBEAT. Every step sets values rather
# than adding to them, so running the whole sequence again changes nothing. Redis losing
# its data in the middle (other clients run between the pipeline's commands) leaves no
# generation, so the next heartbeat re-asserts again.
_RESIZE = """
local function resize(by_size, by_name, group, members)
  local size = redis.call('ZCARD', members)
  if size > 0 then
    redis.call('ZADD', by_size, size, group)
    redis.call('ZADD', by_name, 0, group)
  else
    redis.call('ZREM', by_size, group)
    redis.call('ZREM', by_name, group)
  end
end
"""


def _resizing_script(body: str) -> str:
    return _registry_script(_RESIZE + body)


# KEYS: the node's staging hash. Clears what an interrupted re-assert left, and marks
# the staging hash as this re-assert's with a field no channel can be called ("").
REASSERT_BEGIN = """
redis.call('DEL', KEYS[1])
return redis.call('HSET', KEYS[1], '', '')
"""

# KEYS: node channels(N), staging hash(N). ARGV: prefix, tolerance (s), JSON list of
# [channel, seconds since opened (-1: never opened), metadata JSON ("": keep Redis's),
# {group: seconds since joined}]. Adds missing memberships and stages each channel's
# record. A stored join time within `tolerance` of the node's is kept, so a repeated
# re-assert rewrites the same values.
REASSERT_CHANNELS = _registry_script("""
local t, prefix, tolerance = now(), ARGV[1], tonumber(ARGV[2])
for _, entry in ipairs(cjson.decode(ARGV[3])) do
  local channel, opened, metadata = entry[1], tonumber(entry[2]), entry[3]
  local old = decode(redis.call('HGET', KEYS[1], channel))
  local record, first = {g = {}}, nil
  for group, age in pairs(entry[4]) do
    local members = prefix .. ':members:{' .. group .. '}'
    local joined = t - tonumber(age)
    local stored = redis.call('ZSCORE', members, channel)
    if stored and math.abs(tonumber(stored) - joined) <= tolerance then
      joined = tonumber(stored)
    else
      redis.call('ZADD', members, joined, channel)
    end
    record.g[group] = joined
    if first == nil or joined < first then first = joined end
  end
  local created = opened >= 0 and t - opened or nil
  if old.t and (created == nil or math.abs(old.t - created) <= tolerance) then
    record.t = old.t
  else
    record.t = created or first or t
  end
  if metadata ~= '' then record.m = metadata else record.m = old.m end
  redis.call('HSET', KEYS[2], channel, cjson.encode(record))
end
return 1
""")

# KEYS: node channels(N), staging hash(N), rooms by-size, rooms by-name, node(N).
# ARGV: prefix, node, generation. Removes the memberships Redis holds for the node and
# the staged records lack, sizes the rooms they were in from their member sets, and
# drops the node's count in them (REASSERT_GROUPS sets it again where the node has
# members); then the staged records replace the node's, and the node record gets the
# generation. Returns how many memberships were removed, or -1 (nothing done) when the
# staging hash lost its mark: Redis lost data since REASSERT_BEGIN.
REASSERT_SWAP = _resizing_script("""
local prefix, node = ARGV[1], ARGV[2]
if redis.call('HDEL', KEYS[2], '') == 0 then
  redis.call('DEL', KEYS[2])
  return -1
end
local old = redis.call('HGETALL', KEYS[1])
local touched, removed = {}, 0
for i = 1, #old, 2 do
  local raw, staged = old[i + 1], redis.call('HGET', KEYS[2], old[i])
  if staged ~= raw then  -- an unchanged record (the usual case) needs no decoding
    local keep = staged and decode(staged).g or {}
    for group, _ in pairs(decode(raw).g) do
      if keep[group] == nil
          and redis.call('ZREM', prefix .. ':members:{' .. group .. '}', old[i]) == 1 then
        touched[group] = true
        removed = removed + 1
      end
    end
  end
end
for group, _ in pairs(touched) do
  local members = prefix .. ':members:{' .. group .. '}'
  redis.call('HDEL', members .. ':nodes', node)
  resize(KEYS[3], KEYS[4], group, members)
end
if redis.call('HLEN', KEYS[2]) > 0 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('HLEN', KEYS[5]) > 0 then  -- else it was lost too: no generation
  redis.call('HSET', KEYS[5], 'gen', ARGV[3])
end
return removed
""")

# KEYS: rooms by-size, rooms by-name. ARGV: prefix, node, then pairs of group and the
# node's member count in it. Sets the node's count and each room's size and indexes.
REASSERT_GROUPS = _resizing_script("""
local prefix, node = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  local members = prefix .. ':members:{' .. ARGV[i] .. '}'
  redis.call('HSET', members .. ':nodes', node, ARGV[i + 1])
  resize(KEYS[1], KEYS[2], ARGV[i], members)
end
return 1
""")


#: Scripts that may run twice without effect beyond running once, so a call whose
#: connection dropped after sending may be retried (docs/reliability.md). Reads, and
#: registry writes that set state: JOIN/LEAVE change the counters only when the
#: membership itself changes, OPEN is HSETNX, CLOSE/SET_METADATA/HEARTBEAT/REAP set
#: or delete, and every re-assert step sets values; HISTORY_READ only creates a missing
#: epoch (a second run finds it); DURABLE_ACK acknowledges ids. Not here: DURABLE_SEND and
#: DURABLE_NEXT (a second run queues or takes a second message), SEND_TO_NODE, PUSH and
#: HISTORY_APPEND (a second run delivers a second copy) and RELEASE (a second DECRBY frees
#: a slot twice).
IDEMPOTENT = frozenset(
    {JOIN, LEAVE, OPEN, CLOSE, SET_METADATA, HEARTBEAT, REAP, ROOM, ROOM_SIZE, MEMBERS,
     CHANNEL, NODES, ROOMS, HGETALL, REASSERT_BEGIN, REASSERT_CHANNELS, REASSERT_SWAP,
     REASSERT_GROUPS, HISTORY_READ, DURABLE_ACK}
)  # fmt: skip


def script_name(source: str) -> str:
    """The name of the constant holding a script of this module ("other" for none)."""
    if not _NAMES:  # built on first use, so it covers every script the module defines
        scripts = globals().items()
        _NAMES.update(
            (value, name)
            for name, value in scripts
            if name.isupper() and not name.startswith("_") and isinstance(value, str)
        )
    return _NAMES.get(source, "other")


_NAMES: dict[str, str] = {}
