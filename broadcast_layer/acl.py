"""The least-privilege Redis ACL user for the layer: its keys, its pub/sub channels, its commands.

:func:`acl_rules` is the one source of the rules; docs/security.md shows its output, and
the test suite runs the whole layer (nodes, registry, emitter, commands, admin actions,
flush) as a user created from it.
"""

from __future__ import annotations

from ._protocol.keys import Keys

__all__ = ["COMMANDS", "acl_rules", "acl_setuser"]

#: Every Redis command the layer sends, directly or from its Lua scripts, and why.
COMMANDS: dict[str, str] = {
    # sent by the clients
    "ping": "layer.ping(), `manage.py check --deploy`, Sentinel's connection check",
    "select": "only when a host URL names a database other than 0",
    "evalsha": "every Lua script: registry reads and writes, sends, channel credit",
    "script|load": "loads the scripts once per connection pool, and after a Redis restart",
    "publish": "group_send (also from the history script), the emitter, control messages",
    "subscribe": "a node's group channels and its own node channel",
    "unsubscribe": "a node's last member left a group",
    "blpop": "receive() on a normal channel (a worker's queue)",
    "scan": "flush()",
    "unlink": "flush()",
    # called inside the Lua scripts (Redis checks them against the ACL too)
    "time": "scripts: the registry's clock",
    "get": "scripts: a send reads the credit of a process-specific channel near capacity",
    "decr": "scripts: a send takes one credit",
    "incr": "scripts: a send that reached no node gives its credit back",
    "set": "scripts: the owning node writes a channel's credit",
    "incrby": "scripts: the owning node adjusts a channel's credit",
    "pexpire": "scripts: expiry of credit, queues and node records",
    "del": "scripts: credit and records that are done",
    "rpush": "scripts: a send to a normal channel",
    "lpop": "scripts: expired entries of a normal channel",
    "lindex": "scripts: expired entries of a normal channel",
    "llen": "scripts: capacity of a normal channel",
    "hget": "registry: a channel's record",
    "hmget": "registry: the metadata of a group's members, per node",
    "hexists": "registry: whether a channel has a record (metadata is set on known ones)",
    "hset": "registry: channel and node records",
    "hsetnx": "registry: a new channel's record",
    "hdel": "registry: records that are done",
    "hgetall": "registry: a node's channels and record",
    "hincrby": "registry: members per node of a group",
    "hlen": "registry: nodes holding a group's members",
    "rename": "registry: a re-assert's staged channel records and metadata replace the node's",
    "zadd": "registry: memberships, room and node indexes",
    "zrem": "registry: memberships, room and node indexes",
    "zincrby": "registry: room sizes",
    "zscore": "registry: room sizes, node heartbeats",
    "zcard": "registry: room count",
    "zcount": "registry: room size within group_expiry",
    "zrange": "registry: rooms by name",
    "zlexcount": "registry: the range of a room search's literal start in rooms by name",
    "zrevrange": "registry: rooms by size",
    "zrangebyscore": "registry: members, live and dead nodes",
    "xadd": "history groups: a group_send appends to the group's stream",
    "xrange": "history groups: group_history() and a node's catch-up after a reconnect",
    "xrevrange": "history groups: group_history() of the latest messages",
    "exists": "scripts: a channel's credit, a durable channel's stream and group exist; a "
    "re-assert's staged metadata",
    "xlen": "durable channels: capacity",
    "xack": "durable channels: a receive acknowledges the previous message",
    "xdel": "durable channels: an acknowledged message is deleted",
    "xautoclaim": "durable channels: a dead consumer's message is taken over after claim_after",
    "xreadgroup": "durable channels: receive()",
    "xgroup|create": "durable channels: the consumer group, on first use",
    "xgroup|delconsumer": "durable channels: dead consumers are deleted",
    "xinfo|consumers": "durable channels: finding dead consumers",
}

#: redis-py names itself on every new connection (Redis 7.2 and later; errors ignored).
CLIENT_SETINFO = "client|setinfo"


def acl_rules(prefix: str = "asgi", redis_version: tuple[int, int] = (7, 2)) -> list[str]:
    """The ACL rules of a user that can run the layer with ``prefix`` and nothing else.

    Keys (``~``) and pub/sub channels (``&``) are the layer's own patterns; commands are
    :data:`COMMANDS`, plus ``client|setinfo`` on Redis 7.2 and later (older servers do
    not know it and would refuse the whole rule set). Prepend ``reset on >password``.
    """
    keys = Keys(prefix)
    commands = list(COMMANDS)
    if redis_version >= (7, 2):
        commands.append(CLIENT_SETINFO)
    # Scripts that publish declare their pub/sub channel in KEYS (one slot on a cluster),
    # so the channel patterns are key patterns too.
    key_patterns = dict.fromkeys([*keys.patterns(), *keys.channel_patterns()])
    return [
        *(f"~{pattern}" for pattern in key_patterns),
        # Redis 6.2 gives a new user every channel (acl-pubsub-default allchannels) and
        # refuses a channel pattern after that; 7.0 starts with none. Say it either way.
        "resetchannels",
        *(f"&{pattern}" for pattern in keys.channel_patterns()),
        "-@all",
        *(f"+{command}" for command in commands),
    ]


def acl_setuser(user: str, prefix: str = "asgi", redis_version: tuple[int, int] = (7, 2)) -> str:
    """The ``ACL SETUSER`` line for ``redis-cli``, with ``<password>`` to replace."""
    return " ".join(["ACL SETUSER", user, "reset on '><password>'",
                     *(f"'{rule}'" for rule in acl_rules(prefix, redis_version))])  # fmt: skip
