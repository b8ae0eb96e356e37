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
    #: For a REGISTRY_BATCH call: the calls it runs, in order (see ``batch.py``).
    parts: tuple[Call[Any], ...] = ()

    @property
    def idempotent(self) -> bool:
        """Whether running the call twice leaves Redis as running it once (see IDEMPOTENT)."""
        return self.script in IDEMPOTENT


#: Calls in steps: a generator yields each step's calls (run together, one pipeline per
#: master), receives their results (in order), and returns the plan's result. A failed
#: call fails the plan. ``Host.run_plan`` and ``SyncHost.run_plan`` drive it.
Plan = Generator[list[Call[Any]], list[Any], T]


def publish_command(sharded: bool) -> str:
    """The command that publishes to a pub/sub channel, in Python and inside scripts:
    ``SPUBLISH`` on a cluster (the channel's slot owner delivers it), else ``PUBLISH``."""
    return "SPUBLISH" if sharded else "PUBLISH"


# -- process-specific channels: a send from another node, and the owner's credit -------
# A channel's credit key exists only while its mailbox is near capacity (the owning node
# writes it: CREDIT); without it a send is one check and one publish.

# KEYS: the channel's credit, its owning node's pub/sub channel (declared so a cluster
# routes the call to, and checks, that one slot). ARGV: payload, publish command (see
# publish_command). Returns -1 when the credit is used up (the channel is full), else
# the number of subscribers reached; a send that reached nobody gives its credit back.
SEND_TO_NODE = """
local credit = redis.call('GET', KEYS[1])
if credit then
  if tonumber(credit) <= 0 then return -1 end
  redis.call('DECR', KEYS[1])
end
local reached = redis.call(ARGV[2], KEYS[2], ARGV[1])
if credit and reached == 0 then
  redis.call('INCR', KEYS[1])
end
return reached
"""

# KEYS: credit keys of one node's channels, then the node's pub/sub channel.
# ARGV: TTL (ms), publish command, marker ('' for none), then one operation per credit
# key: '=<n>' sets it to n with the TTL, '+<n>' or '-<n>' adds to it if it exists, '~'
# renews its TTL if it exists, 'x' deletes it. Publishes the marker, if any, last: the
# node reads it after every send this call's writes did not see. Returns, per key, 1
# when it exists after its operation, else 0.
CREDIT = """
local ttl, out = ARGV[1], {}
for i = 1, #KEYS - 1 do
  local op, key = ARGV[i + 3], KEYS[i]
  local kind = string.sub(op, 1, 1)
  if kind == '=' then
    redis.call('SET', key, string.sub(op, 2), 'PX', ttl)
    out[i] = 1
  elseif kind == 'x' then
    redis.call('DEL', key)
    out[i] = 0
  elseif kind == '~' then
    out[i] = redis.call('PEXPIRE', key, ttl)
  elseif redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, tonumber(op))
    out[i] = 1
  else
    out[i] = 0
  end
end
if ARGV[3] ~= '' then
  redis.call(ARGV[2], KEYS[#KEYS], ARGV[3])
end
return out
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
# one slot) and the node's side (the channel's record in its node's records hash: the
# node's slot). A record is plain text, `<opened>` then `|<group> <joined>` for each group
# (group names hold neither '|' nor ' '; an empty `<opened>`: unknown), so a join or a
# leave edits it with two plain string searches instead of decoding and re-encoding it.
# A channel's metadata is in the node's metadata hash (channel -> JSON text), so listing
# members reads it with one HMGET per node. A member's score in the sorted set is its
# join time in whole microseconds (Redis's clock, exactly): Redis keeps a set of up to
# 128 members as a listpack and, on each insert, walks it parsing every score it
# passes, which an integer score spares (a ZADD into a 50-member set: 3.5 us with a
# fractional score, 1.0 with an integer one). Shared Lua helpers, prepended to each
# registry script (now() reads Redis's clock once per script run; now_text() and
# now_us_text() format it once). The writes pass numbers to redis.call as text: Lua
# turns a number argument into text with sprintf, which cost more than the ZREM of a
# leave (callgrind).
_PRELUDE = """
local clock, clock_text, clock_us, time_reply
local function now()
  if not clock then
    time_reply = redis.call('TIME')
    clock = tonumber(time_reply[1]) + tonumber(time_reply[2]) / 1000000
  end
  return clock
end
local function now_text()
  if not clock_text then clock_text = tostring(now()) end
  return clock_text
end
local function now_us_text()
  if not clock_us then
    now()
    clock_us = time_reply[1] .. string.format('%06d', tonumber(time_reply[2]))
  end
  return clock_us
end
local function us_text(seconds)
  return string.format('%d', math.floor(seconds * 1000000))
end
local function record_without(raw, group)
  local from = string.find(raw, '|' .. group .. ' ', 1, true)
  if not from then return raw, false end
  local to = string.find(raw, '|', from + 1, true)
  return string.sub(raw, 1, from - 1) .. (to and string.sub(raw, to) or ''), true
end
local function record_groups(raw)
  local groups = {}
  for group, joined in string.gmatch(raw, '|([^ |]+) ([^|]*)') do groups[group] = joined end
  return groups
end
local function count_leave(by_size, by_name, group)
  local size = tonumber(redis.call('ZINCRBY', by_size, '-1', group))
  if size <= 0 then
    redis.call('ZREM', by_size, group)
    redis.call('ZREM', by_name, group)
  end
end
local function count_node_leave(nodes_key, node)
  if redis.call('HINCRBY', nodes_key, node, '-1') <= 0 then
    redis.call('HDEL', nodes_key, node)
  end
end
"""

# The registry's writes as functions of (k, a): each reads its keys from KEYS[k] on and
# its arguments from ARGV[a] on, so one script call can run many of them (REGISTRY_BATCH).
_REGISTRY_OPS = """
-- The group's side. KEYS: members(G), member nodes(G), rooms by-size and by-name (G's
-- shard). ARGV: group, channel, node. 1 for a new membership, 0 for a refreshed one.
local function join_group(k, a)
  local new = redis.call('ZADD', KEYS[k], now_us_text(), ARGV[a + 1])
  if new == 1 then
    if tonumber(redis.call('ZINCRBY', KEYS[k + 2], '1', ARGV[a])) == 1 then
      redis.call('ZADD', KEYS[k + 3], '0', ARGV[a])
    end
    redis.call('HINCRBY', KEYS[k + 1], ARGV[a + 2], '1')
  end
  return new
end
-- Same KEYS and ARGV as join_group. 1 if a membership was removed.
local function leave_group(k, a)
  local removed = redis.call('ZREM', KEYS[k], ARGV[a + 1])
  if removed == 1 then
    count_leave(KEYS[k + 2], KEYS[k + 3], ARGV[a])
    count_node_leave(KEYS[k + 1], ARGV[a + 2])
  end
  return removed
end
-- The node's side. KEYS: node records(N). ARGV: group, channel. Records the join (a
-- channel first seen here is dated by it).
local function join_record(k, a)
  local raw = redis.call('HGET', KEYS[k], ARGV[a + 1])
  raw = raw and record_without(raw, ARGV[a]) or now_text()
  redis.call('HSET', KEYS[k], ARGV[a + 1], raw .. '|' .. ARGV[a] .. ' ' .. now_text())
  return 1
end
-- KEYS: node records(N). ARGV: group, channel. Forgets the join; 0 if no record.
local function leave_record(k, a)
  local raw = redis.call('HGET', KEYS[k], ARGV[a + 1])
  if not raw then return 0 end
  local rest, found = record_without(raw, ARGV[a])
  if found then redis.call('HSET', KEYS[k], ARGV[a + 1], rest) end
  return 1
end
-- Both sides in one call, where they share a slot (one server): KEYS: the group's
-- side's four, then node records(N). ARGV: group, channel, node. The group's side's
-- result; an error in either side fails the call.
local function join(k, a)
  local new = join_group(k, a)
  join_record(k + 4, a)
  return new
end
local function leave(k, a)
  local removed = leave_group(k, a)
  leave_record(k + 4, a)
  return removed
end
-- KEYS: node records(N). ARGV: channel. Records a new channel (never overwrites).
local function open(k, a)
  return redis.call('HSETNX', KEYS[k], ARGV[a], now_text())
end
-- KEYS: node records(N), node metadata(N). ARGV: channel. Forgets a channel; returns the
-- groups its record still named (their group side is left by the caller).
local function close_record(k, a)
  local raw = redis.call('HGET', KEYS[k], ARGV[a])
  redis.call('HDEL', KEYS[k + 1], ARGV[a])
  if not raw then return {} end
  local groups = {}
  for group, _ in pairs(record_groups(raw)) do groups[#groups + 1] = group end
  redis.call('HDEL', KEYS[k], ARGV[a])
  return groups
end
-- KEYS: node records(N), node metadata(N). ARGV: channel, metadata JSON. Attaches
-- metadata to a known channel, kept as the JSON text; 0 if the channel is unknown.
local function set_metadata(k, a)
  if redis.call('HEXISTS', KEYS[k], ARGV[a]) == 0 then return 0 end
  redis.call('HSET', KEYS[k + 1], ARGV[a], ARGV[a + 1])
  return 1
end
"""


def _registry_op(call: str) -> str:
    return _PRELUDE + _REGISTRY_OPS + f"return {call}(1, 1)\n"


JOIN_GROUP = _registry_op("join_group")
LEAVE_GROUP = _registry_op("leave_group")
JOIN_RECORD = _registry_op("join_record")
LEAVE_RECORD = _registry_op("leave_record")
#: Both sides of a join or a leave as one call, on one server (``RecordCalls``).
JOIN = _registry_op("join")
LEAVE = _registry_op("leave")
OPEN = _registry_op("open")
CLOSE_RECORD = _registry_op("close_record")
SET_METADATA = _registry_op("set_metadata")

#: The registry writes one REGISTRY_BATCH call can run: script -> (its name in the
#: batch, how many KEYS, how many ARGV, which ARGV is the channel it writes for). A call
#: of one of these scripts may be sent as a part of a batch instead (``Host.run_all``);
#: its keys and arguments are the same. Each touches only its channel's records and
#: memberships, so writes for different channels commute (``batch.scope``).
BATCHABLE: dict[str, tuple[str, int, int, int]] = {
    JOIN_GROUP: ("join_group", 4, 3, 1),
    LEAVE_GROUP: ("leave_group", 4, 3, 1),
    JOIN_RECORD: ("join_record", 1, 2, 1),
    LEAVE_RECORD: ("leave_record", 1, 2, 1),
    OPEN: ("open", 1, 1, 0),
    CLOSE_RECORD: ("close_record", 2, 1, 0),
    SET_METADATA: ("set_metadata", 2, 2, 0),
    JOIN: ("join", 5, 3, 1),
    LEAVE: ("leave", 5, 3, 1),
}

#: Scripts whose keys are in one slot only on one server: a cluster never runs them.
ONE_SERVER = frozenset({JOIN, LEAVE})

# KEYS: each part's keys in turn. ARGV: for each part, its name (BATCHABLE) then its
# arguments. Runs the parts in order, each as its own script would; one part failing does
# not stop the others. Returns each part's result, an error in place of a failed one.
# Every part of one call touches one slot on a cluster; on one server a node's writes
# of one pipeline share a call (see Host.run_all).
# The table of parts is written from BATCHABLE, so the two cannot disagree.
_BATCH_OPS = ", ".join(
    f"{name} = {{{name}, {keys}, {args}}}" for name, keys, args, _ in BATCHABLE.values()
)
REGISTRY_BATCH = (
    _PRELUDE
    + _REGISTRY_OPS
    + f"\nlocal ops = {{{_BATCH_OPS}}}"
    + """
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local op = ops[ARGV[a]]
  local ok, result = pcall(op[1], k, a + 1)
  if not ok then
    result = type(result) == 'table' and result or {err = tostring(result)}
  end
  out[#out + 1] = result
  k, a = k + op[2], a + 1 + op[3]
end
return out
"""
)

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

# KEYS: node records(N), node metadata(N), node(N), node index shard(N). ARGV: id. The
# last step of a reap, once the node's memberships have been left: its records and index
# entry go.
RETIRE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return redis.call('ZREM', KEYS[4], ARGV[1])
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
local size = redis.call('ZCOUNT', KEYS[1], '(' .. us_text(now() - tonumber(ARGV[1])), '+inf')
return {size, redis.call('HLEN', KEYS[2])}
""")

# KEYS: members(G). ARGV: group_expiry (s). Counts unexpired memberships.
ROOM_SIZE = _registry_script("""
return redis.call('ZCOUNT', KEYS[1], '(' .. us_text(now() - tonumber(ARGV[1])), '+inf')
""")

# KEYS: members(G). ARGV: group_expiry (s), offset, count (-1: all). Returns flat
# [channel, joined (us)] of unexpired members in join order (the group's side of MEMBERS).
MEMBER_ENTRIES = _registry_script("""
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. us_text(now() - tonumber(ARGV[1])), '+inf',
                  'WITHSCORES', 'LIMIT', tonumber(ARGV[2]), tonumber(ARGV[3]))
""")

# KEYS: node index shard(N), node metadata(N). ARGV: ttl (s), node id, the node's
# channels joined by newlines (one argument: no per-channel cost in the request).
# Returns {} when the node is dead; {1} when none of the node's channels has metadata;
# else {1, then each channel's metadata JSON or nil}.
NODE_MEMBERS = _registry_script("""
local beat = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not beat or tonumber(beat) <= now() - tonumber(ARGV[1]) then return {} end
local out = {1}
if redis.call('HLEN', KEYS[2]) == 0 then return out end
local chunk = {}
local function read()
  local found = redis.call('HMGET', KEYS[2], unpack(chunk))
  for i = 1, #chunk do out[#out + 1] = found[i] end
  chunk = {}
end
for channel in string.gmatch(ARGV[3], '[^\\n]+') do
  chunk[#chunk + 1] = channel
  if #chunk == 1000 then read() end  -- unpack() takes a few thousand values at most
end
if #chunk > 0 then read() end
return out
""")

# KEYS: node records(N), node metadata(N). ARGV: channel.
# Returns [now, record or '', metadata JSON or ''].
CHANNEL = _registry_script("""
return {tostring(now()), redis.call('HGET', KEYS[1], ARGV[1]) or '',
        redis.call('HGET', KEYS[2], ARGV[1]) or ''}
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

# KEYS: the node's staging records and staging metadata. Clears what an interrupted
# re-assert left, and marks the staging records as this re-assert's with a field no
# channel can be called ("").
REASSERT_BEGIN = """
redis.call('DEL', KEYS[1], KEYS[2])
return redis.call('HSET', KEYS[1], '', '')
"""

# KEYS: node records(N), staging records(N), node metadata(N), staging metadata(N).
# ARGV: tolerance (s), JSON list of [channel, seconds since opened (-1: never opened),
# metadata JSON ("": keep Redis's), [[group, seconds since joined], ...] sorted by
# group]. Stages each channel's record and metadata. A stored time within `tolerance`
# of the node's is kept as stored, so a repeated re-assert rewrites the same bytes.
REASSERT_CHANNELS = _registry_script("""
local t, tolerance = now(), tonumber(ARGV[1])
local function close_to(stored, computed)
  return stored and tonumber(stored) and math.abs(tonumber(stored) - computed) <= tolerance
end
for _, entry in ipairs(cjson.decode(ARGV[2])) do
  local channel, opened, metadata = entry[1], tonumber(entry[2]), entry[3]
  local raw = redis.call('HGET', KEYS[1], channel) or ''
  local old_opened = string.match(raw, '^[^|]*')
  local old = record_groups(raw)
  local parts, first = {}, nil
  for _, pair in ipairs(entry[4]) do
    local group, joined = pair[1], t - tonumber(pair[2])
    local text = tostring(joined)
    if close_to(old[group], joined) then joined, text = tonumber(old[group]), old[group] end
    parts[#parts + 1] = '|' .. group .. ' ' .. text
    if first == nil or joined < first then first = joined end
  end
  local created = opened >= 0 and t - opened or nil
  local stamp
  if old_opened ~= '' and tonumber(old_opened)
     and (created == nil or close_to(old_opened, created)) then
    stamp = old_opened
  else
    stamp = tostring(created or first or t)
  end
  redis.call('HSET', KEYS[2], channel, stamp .. table.concat(parts))
  if metadata == '' then metadata = redis.call('HGET', KEYS[3], channel) end
  if metadata then redis.call('HSET', KEYS[4], channel, metadata) end
end
return 1
""")

# KEYS: node records(N), staging records(N), node metadata(N), staging metadata(N),
# node(N). ARGV: generation. The staged records and metadata replace the node's, and
# the node record gets the generation. Returns [1, group, channel, ...]: the memberships
# the old records held and the staged ones lack (REASSERT_GROUP removes them on the
# groups' side); or [-1] (nothing done) when the staging records lost their mark: Redis
# lost data since REASSERT_BEGIN.
REASSERT_SWAP = _registry_script("""
if redis.call('HDEL', KEYS[2], '') == 0 then
  redis.call('DEL', KEYS[2], KEYS[4])
  return {-1}
end
local old = redis.call('HGETALL', KEYS[1])
local out = {1}
for i = 1, #old, 2 do
  local raw, staged = old[i + 1], redis.call('HGET', KEYS[2], old[i])
  if staged ~= raw then  -- an unchanged record (the usual case) needs no parsing
    local keep = staged and record_groups(staged) or {}
    for group, _ in pairs(record_groups(raw)) do
      if keep[group] == nil then out[#out + 1] = group; out[#out + 1] = old[i] end
    end
  end
end
if redis.call('HLEN', KEYS[2]) > 0 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[3])
else
  redis.call('DEL', KEYS[3])
end
if redis.call('HLEN', KEYS[5]) > 0 then  -- else it was lost too: no generation
  redis.call('HSET', KEYS[5], 'gen', ARGV[1])
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
  if not (stored and math.abs(tonumber(stored) / 1000000 - joined) <= tolerance) then
    redis.call('ZADD', KEYS[1], us_text(joined), ARGV[i])
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
#: HISTORY_APPEND (a second run delivers a second copy) and CREDIT (a second INCRBY
#: counts a change twice).
IDEMPOTENT = frozenset(
    {JOIN_GROUP, LEAVE_GROUP, JOIN_RECORD, LEAVE_RECORD, JOIN, LEAVE, OPEN, CLOSE_RECORD,
     SET_METADATA, REGISTRY_BATCH,
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
