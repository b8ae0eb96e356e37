"""Lua scripts run by the layer; :class:`Call`, one script call plus how to read its reply;
:data:`Plan`, calls in steps where a step needs the replies of the one before.

Each script is registered once per client (``register_script``) and run by EVALSHA.
Every script touches the keys of one hash slot only (docs/cluster.md): it is given its
keys in ``KEYS`` or, where it reads one key per name of an index, the parts of those
names that put them in the index's slot. Work that spans a group and a node is two
calls, one on each side, each idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


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
#: Calls in steps: a generator yields each step's calls (run together, one pipeline per
#: master), receives their results (in order), and returns the plan's result. A failed
#: call fails the plan. ``Host.run_plan`` and ``SyncHost.run_plan`` drive it.
Plan = Generator[list[Call[Any]], list[Any], T]


def publish_command(sharded: bool) -> str:
    """The command that publishes to a pub/sub channel, in Python and inside scripts:
    ``SPUBLISH`` on a cluster (the channel's slot owner delivers it), else ``PUBLISH``."""
    return "SPUBLISH" if sharded else "PUBLISH"


# KEYS: the in-flight counter of a process-specific channel, its owning node's pub/sub
# channel (declared so a cluster routes the call to, and checks, that one slot).
# ARGV: capacity, expiry (ms), payload, publish command (see publish_command).
# Returns -1 when the channel is full, else the number of subscribers reached.
SEND_TO_NODE = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local reached = redis.call(ARGV[4], KEYS[2], ARGV[3])
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
# A membership lives on two sides, each written by its own call: the group's side (its
# sorted set member -> join time, the per-node counts, the room index shard listing it:
# one slot) and the node's side (the record of the channel in its node's hash, JSON
# {"t": opened, "g": {group: joined}, "m": metadata}: the node's slot). Shared Lua
# helpers, prepended to each registry script:
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
"""

# The group's side. KEYS: members(G), member nodes(G), rooms by-size and by-name (G's
# shard). ARGV: group, channel, node. Returns 1 for a new membership, 0 for a refreshed one.
JOIN_GROUP = _registry_script("""
local new = redis.call('ZADD', KEYS[1], now(), ARGV[2])
if new == 1 then
  redis.call('ZINCRBY', KEYS[3], 1, ARGV[1])
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
return new
""")

# Same KEYS and ARGV as JOIN_GROUP. Returns 1 if a membership was removed.
LEAVE_GROUP = _registry_script("""
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
if removed == 1 then
  count_leave(KEYS[3], KEYS[4], ARGV[1])
  count_node_leave(KEYS[2], ARGV[3])
end
return removed
""")

# The node's side. KEYS: node channels(N). ARGV: group, channel. Records the join.
JOIN_RECORD = _registry_script("""
local t = now()
local record = decode(redis.call('HGET', KEYS[1], ARGV[2]))
record.t = record.t or t
record.g[ARGV[1]] = t
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(record))
return 1
""")

# KEYS: node channels(N). ARGV: group, channel. Forgets the join; 0 if no record.
LEAVE_RECORD = _registry_script("""
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then return 0 end
local record = decode(raw)
record.g[ARGV[1]] = nil
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(record))
return 1
""")

# KEYS: node channels(N). ARGV: channel. Records a new channel (never overwrites).
OPEN = _registry_script("""
return redis.call('HSETNX', KEYS[1], ARGV[1], cjson.encode({t = now()}))
""")

# KEYS: node channels(N). ARGV: channel. Forgets a channel; returns the groups its
# record still named (their group side is left by the caller).
CLOSE_RECORD = _registry_script("""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {} end
local groups = {}
for group, _ in pairs(decode(raw).g) do groups[#groups + 1] = group end
redis.call('HDEL', KEYS[1], ARGV[1])
return groups
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

# KEYS: node(N), node index shard(N). ARGV: id, host, pid, started, channels, prefix,
# ttl (s), birth generation ('' for none). Returns 1 if the record has a generation,
# else 0: the node's records may be missing (Redis lost them) and need a re-assert,
# which writes a generation (see REASSERT_SWAP below). A node's first record (its
# birth, sent before any other record of it) carries generation 0, so a new node has
# nothing to re-assert.
HEARTBEAT = _registry_script("""
local t = now()
local had = redis.call('HGET', KEYS[1], 'gen') and 1 or 0
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'host', ARGV[2], 'pid', ARGV[3],
           'started', ARGV[4], 'heartbeat', t, 'channels', ARGV[5], 'prefix', ARGV[6])
if had == 0 and ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'gen', ARGV[8])
end
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[7]) * 1000))
redis.call('ZADD', KEYS[2], t, ARGV[1])
return had
""")

# KEYS: a node index shard. ARGV: ttl (s), max. Up to `max` ids whose heartbeat is older
# than the TTL (the first step of a reap: records.reap).
DEAD = _registry_script("""
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now() - tonumber(ARGV[1])),
                  'LIMIT', 0, tonumber(ARGV[2]))
""")

# KEYS: node channels(N), node(N), node index shard(N). ARGV: id. The last step of a
# reap, once the node's memberships have been left: its records and index entry go.
RETIRE = """
redis.call('DEL', KEYS[1], KEYS[2])
return redis.call('ZREM', KEYS[3], ARGV[1])
"""

# KEYS: a node index shard. ARGV: ttl (s), then node ids. For each id: 1 if alive, else 0.
ALIVE = _registry_script("""
local cutoff, out = now() - tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  local beat = redis.call('ZSCORE', KEYS[1], ARGV[i])
  out[#out + 1] = (beat and tonumber(beat) > cutoff) and 1 or 0
end
return out
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

# KEYS: members(G). ARGV: group_expiry (s), offset, count (-1: all). Returns flat
# [channel, joined] of unexpired members in join order (the group's side of MEMBERS).
MEMBER_ENTRIES = _registry_script("""
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now() - tonumber(ARGV[1])), '+inf',
                  'WITHSCORES', 'LIMIT', tonumber(ARGV[2]), tonumber(ARGV[3]))
""")

# KEYS: node index shard(N), node channels(N). ARGV: ttl (s), node id, channels.
# Returns {} when the node is dead, else the metadata JSON ('' for none) of each channel.
NODE_MEMBERS = _registry_script("""
local beat = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not beat or tonumber(beat) <= now() - tonumber(ARGV[1]) then return {} end
local out = {}
for i = 3, #ARGV do
  local record = redis.call('HGET', KEYS[2], ARGV[i])
  local metadata = record and cjson.decode(record).m
  out[#out + 1] = type(metadata) == 'string' and metadata or ''
end
return out
""")

# KEYS: node channels(N). ARGV: channel. Returns [now, record JSON or ''].
CHANNEL = _registry_script("""
return {tostring(now()), redis.call('HGET', KEYS[1], ARGV[1]) or ''}
""")

# KEYS: a node index shard. ARGV: ttl (s), what goes before and after an id in its node
# record's name (keys.node_parts: the records of one shard's nodes share its slot).
# Returns flat [id, HGETALL...] lists of the shard's live nodes.
NODES = _registry_script("""
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now() - tonumber(ARGV[1])), '+inf')
local out = {}
for _, id in ipairs(live) do
  local fields = redis.call('HGETALL', ARGV[2] .. id .. ARGV[3])
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

# KEYS: one shard's rooms by-name and by-size. ARGV: order ("name"|"size"), offset,
# count, name budget, step budget, what goes before and after a name in its member-nodes
# key (keys.member_nodes_parts), literal start of the glob ("" for none), the first
# string after every name with that start, glob tokens (none: no filter). By name with a
# literal start, only that start's rank range of the index is read (two ZLEXCOUNTs find
# it; ZRANGEBYLEX's LIMIT would walk the offset). A call stops after examining
# `name budget` names or spending `step budget` matcher steps.
# Returns [total, next offset or -1, name, size, nodes holding members, ...].
ROOMS = (
    GLOB
    + """
local by_name, by_size = KEYS[1], KEYS[2]
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
      out[#out + 1] = redis.call('HLEN', ARGV[6] .. name .. ARGV[7])
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

# KEYS: history stream(G), history meta(G), the group's pub/sub channel (declared, so a
# cluster checks it shares the slot). ARGV: size, ttl (ms), publish command
# (publish_command), payload, a fresh epoch (used only when the group has none). Appends
# the payload as the next offset, trims to about `size` entries, and publishes
# '~<offset> <epoch>\n<payload>' in the same step. Returns [offset, epoch, subscribers reached].
HISTORY_APPEND = (
    _HISTORY_META
    + """
local epoch = history_meta(KEYS[1], KEYS[2], ARGV[5], ARGV[2])
local offset = string.format('%d', redis.call('HINCRBY', KEYS[2], 'top', 1))
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. offset, 'm', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local frame = '~' .. offset .. ' ' .. epoch .. '\\n' .. ARGV[4]
-- The group's one publish (SPUBLISH on a cluster: same slot as the keys).
local reached = redis.call(ARGV[3], KEYS[3], frame)
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
# Sent through the node's ordered writer in two steps. The node's side: REASSERT_BEGIN,
# one REASSERT_CHANNELS per chunk of channels, REASSERT_SWAP (which writes the
# generation and names the memberships the old records held beyond the new ones). Then
# the groups' side: one REASSERT_GROUP per group the node is in or has left, then
# HEARTBEAT. Every step sets values rather than adding to them, so running the whole
# sequence again changes nothing. Redis losing its data in the middle (other clients
# run between the commands) leaves no generation, so the next heartbeat re-asserts again.

# KEYS: the node's staging hash. Clears what an interrupted re-assert left, and marks
# the staging hash as this re-assert's with a field no channel can be called ("").
REASSERT_BEGIN = """
redis.call('DEL', KEYS[1])
return redis.call('HSET', KEYS[1], '', '')
"""

# KEYS: node channels(N), staging hash(N). ARGV: tolerance (s), JSON list of [channel,
# seconds since opened (-1: never opened), metadata JSON ("": keep Redis's), {group:
# seconds since joined}]. Stages each channel's record. A stored time within
# `tolerance` of the node's is kept, so a repeated re-assert rewrites the same values.
REASSERT_CHANNELS = _registry_script("""
local t, tolerance = now(), tonumber(ARGV[1])
local function close_to(stored, computed)
  return stored and math.abs(tonumber(stored) - computed) <= tolerance
end
for _, entry in ipairs(cjson.decode(ARGV[2])) do
  local channel, opened, metadata = entry[1], tonumber(entry[2]), entry[3]
  local old = decode(redis.call('HGET', KEYS[1], channel))
  local record, first = {g = {}}, nil
  for group, age in pairs(entry[4]) do
    local joined = t - tonumber(age)
    if close_to(old.g[group], joined) then joined = tonumber(old.g[group]) end
    record.g[group] = joined
    if first == nil or joined < first then first = joined end
  end
  local created = opened >= 0 and t - opened or nil
  if old.t and (created == nil or close_to(old.t, created)) then
    record.t = old.t
  else
    record.t = created or first or t
  end
  if metadata ~= '' then record.m = metadata else record.m = old.m end
  redis.call('HSET', KEYS[2], channel, cjson.encode(record))
end
return 1
""")

# KEYS: node channels(N), staging hash(N), node(N). ARGV: generation. The staged
# records replace the node's, and the node record gets the generation. Returns
# [1, group, channel, ...]: the memberships the old records held and the staged ones
# lack (REASSERT_GROUP removes them on the groups' side); or [-1] (nothing done) when
# the staging hash lost its mark: Redis lost data since REASSERT_BEGIN.
REASSERT_SWAP = _registry_script("""
if redis.call('HDEL', KEYS[2], '') == 0 then
  redis.call('DEL', KEYS[2])
  return {-1}
end
local old = redis.call('HGETALL', KEYS[1])
local out = {1}
for i = 1, #old, 2 do
  local raw, staged = old[i + 1], redis.call('HGET', KEYS[2], old[i])
  if staged ~= raw then  -- an unchanged record (the usual case) needs no decoding
    local keep = staged and decode(staged).g or {}
    for group, _ in pairs(decode(raw).g) do
      if keep[group] == nil then out[#out + 1] = group; out[#out + 1] = old[i] end
    end
  end
end
if redis.call('HLEN', KEYS[2]) > 0 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('HLEN', KEYS[3]) > 0 then  -- else it was lost too: no generation
  redis.call('HSET', KEYS[3], 'gen', ARGV[1])
end
return out
""")

# KEYS: members(G), member nodes(G), rooms by-size and by-name (G's shard). ARGV: group,
# node, tolerance (s), how many members the node holds in G (n), n pairs of channel and
# seconds since it joined, then channels to remove. Sets the node's memberships in G,
# its count there, and the room's size in the index. A stored join time within
# `tolerance` is kept. Returns how many memberships were removed.
REASSERT_GROUP = _registry_script("""
local group, node, tolerance, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t, removed = now(), 0
for i = 5 + 2 * n, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
end
for i = 5, 4 + 2 * n, 2 do
  local joined = t - tonumber(ARGV[i + 1])
  local stored = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not (stored and math.abs(tonumber(stored) - joined) <= tolerance) then
    redis.call('ZADD', KEYS[1], joined, ARGV[i])
  end
end
if n > 0 then
  redis.call('HSET', KEYS[2], node, n)
else
  redis.call('HDEL', KEYS[2], node)
end
local size = redis.call('ZCARD', KEYS[1])
if size > 0 then
  redis.call('ZADD', KEYS[3], size, group)
  redis.call('ZADD', KEYS[4], 0, group)
else
  redis.call('ZREM', KEYS[3], group)
  redis.call('ZREM', KEYS[4], group)
end
return removed
""")


#: Scripts that may run twice without effect beyond running once, so a call whose
#: connection dropped after sending may be retried (docs/reliability.md). Reads, and
#: registry writes that set state: the JOIN and LEAVE halves change the counters only
#: when the membership itself changes, OPEN is HSETNX, the others set or delete, and
#: every re-assert step sets values; HISTORY_READ only creates a missing epoch (a second
#: run finds it); DURABLE_ACK acknowledges ids. Not here: DURABLE_SEND and DURABLE_NEXT
#: (a second run queues or takes a second message), SEND_TO_NODE, PUSH and
#: HISTORY_APPEND (a second run delivers a second copy) and RELEASE (a second DECRBY frees
#: a slot twice).
IDEMPOTENT = frozenset(
    {JOIN_GROUP, LEAVE_GROUP, JOIN_RECORD, LEAVE_RECORD, OPEN, CLOSE_RECORD, SET_METADATA,
     HEARTBEAT, DEAD, RETIRE, ALIVE, ROOM, ROOM_SIZE, MEMBER_ENTRIES, NODE_MEMBERS, CHANNEL,
     NODES, ROOMS, HGETALL, REASSERT_BEGIN, REASSERT_CHANNELS, REASSERT_SWAP, REASSERT_GROUP,
     HISTORY_READ, DURABLE_ACK}
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
