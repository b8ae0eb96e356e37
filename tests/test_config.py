"""CONFIG: channels_redis's keys with the same meaning, clear errors for bad ones."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis

from broadcast_layer import ConfigurationError, conf
from broadcast_layer.contrib.embedded import EmbeddedRedis, _free_port, find_redis_server
from broadcast_layer.layer import BroadcastChannelLayer

from . import faults
from .conftest import within

CHANNELS_REDIS_CONFIG = {
    "hosts": [("127.0.0.1", 6379)],
    "prefix": "myapp",
    "expiry": 30,
    "group_expiry": 3600,
    "capacity": 500,
    "channel_capacity": {"http.request": 200, "websocket.send*": 20},
    "symmetric_encryption_keys": ["secret"],
    "serializer_format": "json",
}


def test_every_channels_redis_key_is_accepted():
    layer = BroadcastChannelLayer(**CHANNELS_REDIS_CONFIG)
    assert layer.config.prefix == "myapp"
    assert layer.config.hosts == ({"host": "127.0.0.1", "port": 6379},)
    assert layer.get_capacity("websocket.send!abc") == 20
    assert layer.get_capacity("http.request") == 200
    assert layer.get_capacity("other") == 500


def test_an_unknown_key_fails_at_construction_and_names_it():
    with pytest.raises(TypeError, match="hots"):
        BroadcastChannelLayer(hots=["redis://localhost"])


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"hosts": "redis://localhost:6379"}, "hosts"),
        ({"expiry": 0}, "expiry"),
        ({"group_expiry": -1}, "group_expiry"),
        ({"capacity": 1.5}, "capacity"),
        ({"channel_capacity": {"x": 0}}, "channel_capacity"),
        ({"prefix": "has space"}, "prefix"),
        ({"symmetric_encryption_keys": "one-key"}, "symmetric_encryption_keys"),
        ({"serializer_format": "yaml"}, "serializer_format"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"failover_timeout": 0}, "failover_timeout"),
        ({"hosts": [{"master_name": "mymaster"}]}, "sentinels"),
        ({"cluster": 1}, "cluster"),
        (
            {"cluster": True, "hosts": [{"sentinels": [("h", 26379)], "master_name": "m"}]},
            "Sentinel",
        ),
    ],
)
def test_bad_values_raise_configuration_error_naming_the_key(config, names):
    with pytest.raises(ConfigurationError, match=names):
        BroadcastChannelLayer(**config)


@pytest.mark.parametrize(
    "prefix",
    ["a:b", "myapp:", "site*", "si?e", "s[ab]", "s]", "{site}", "has space", "tab\t", "room\n",
     "", "x" * 65, "café", 7, None],
)  # fmt: skip
def test_prefixes_that_could_overlap_or_break_keys_are_refused(prefix):
    with pytest.raises(ConfigurationError, match="prefix"):
        BroadcastChannelLayer(prefix=prefix)


async def test_flush_deletes_only_its_own_keys_beside_prefixes_that_start_alike(
    make_layer, redis_client, prefix
):
    async def populate(site: str) -> None:
        owner = make_layer(prefix=site, channel_capacity={"small.*": 2})
        channel = await owner.new_channel()
        await owner.group_add("lobby", channel)  # registry keys, node keys
        await owner.new_channel("small")  # a channel's credit (counted from the start)
        await owner.send("worker.q", {"type": "m"})  # a queue

    def keys(site: str) -> set[bytes]:
        return set(redis_client.scan_iter(match=f"{site}:*", count=1000))

    sites = [prefix, prefix + "2", prefix + ".b", prefix + "-b"]
    for site in sites:
        await populate(site)
    kinds = {key.split(b":")[1] for key in keys(sites[1])}
    assert {b"queue", b"credit", b"members", b"{rooms}", b"nodes", b"node"} <= kinds
    others = {site: keys(site) for site in sites[1:]}
    await make_layer(prefix=prefix).flush()
    assert keys(prefix) == set()
    for site, before in others.items():
        assert keys(site) == before, site


SENTINEL = {"sentinels": [("127.0.0.1", 26379)], "master_name": "mymaster"}


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            {"address": "redis://localhost", "socket_timout": 1},
            "unknown connection option 'socket_timout'",
        ),
        (
            {"address": "redis://localhost", "socket_timeout": "x"},
            "'socket_timeout' must be a number or None",
        ),
        (
            {"address": "redis://localhost", "socket_keepalive": 1},
            "'socket_keepalive' must be a bool",
        ),
        ("redis://localhost?socket_timout=1", "unknown connection option 'socket_timout'"),
        # redis-py quotes the name with '' from 5.1 on, with `` before
        ("redis://localhost?socket_timeout=x", "Invalid value for .socket_timeout."),
        (
            {"host": "localhost", "port": 6379, "health_check_intervall": 5},
            "'health_check_intervall'",
        ),
        ({"host": "localhost", "port": 6379, "ssl": True}, "'ssl'.*rediss://"),
        ({"host": "localhost", "max_connections": "10"}, "max_connections"),
        ("unix:///tmp/redis.sock?socket_timeout=1&hostt=x", "'hostt'"),
        ({**SENTINEL, "socket_timout": 1}, "unknown connection option 'socket_timout'"),
        ({**SENTINEL, "socket_connect_timeout": "1"}, "'socket_connect_timeout' must be a number"),
        ({**SENTINEL, "sentinel_kwargs": {"pasword": "x"}}, "pasword"),
        (
            {**SENTINEL, "sentinel_kwargs": {"socket_timeout": "1"}},
            "'socket_timeout' must be a number",
        ),
    ],
)
def test_a_bad_connection_option_is_a_configuration_error_naming_it(host, message):
    """Caught when the layer is built, not as an endless reconnect loop later."""
    with pytest.raises(ConfigurationError, match=rf"CONFIG\['hosts'\]\[0\]: .*{message}"):
        BroadcastChannelLayer(hosts=[host])


@pytest.mark.parametrize(
    "host",
    [
        "redis://user:secret@localhost:6379/2?socket_timeout=3&health_check_interval=10",
        "rediss://localhost:6380/0?ssl_cert_reqs=none",
        "unix:///tmp/redis.sock?db=1",
        ("localhost", 6379),
        {"host": "localhost", "port": "6379", "db": 1, "password": None, "max_connections": 50,
         "socket_timeout": 2.5, "socket_connect_timeout": 1, "socket_keepalive": True,
         "retry_on_timeout": True, "client_name": "web", "protocol": 2},
        {"address": "rediss://localhost", "ssl_check_hostname": False, "ssl_ca_certs": "/ca.pem"},
        {**SENTINEL, "db": 0, "password": "x", "socket_timeout": 1,
         "sentinel_kwargs": {"password": "y", "socket_timeout": 0.5}},
    ],
)  # fmt: skip
def test_valid_connection_options_are_accepted(host):
    BroadcastChannelLayer(hosts=[host])


async def test_host_dicts_and_urls_both_work(redis_server, prefix):
    by_url = BroadcastChannelLayer(hosts=[redis_server.url], prefix=prefix)
    by_dict = BroadcastChannelLayer(
        hosts=[{"host": "127.0.0.1", "port": redis_server.port}], prefix=prefix
    )
    try:
        channel = await by_dict.new_channel()
        await by_dict.group_add("g", channel)
        await by_url.group_send("g", {"type": "m"})
        assert await within(by_dict.receive(channel)) == {"type": "m"}
    finally:
        await by_url.close()
        await by_dict.close()


async def test_unix_socket_urls_work(prefix):
    with EmbeddedRedis(unix_socket=True) as server:
        layer = BroadcastChannelLayer(hosts=[server.url], prefix=prefix)
        try:
            channel = await layer.new_channel()
            await layer.group_add("g", channel)
            await layer.group_send("g", {"type": "m"})
            assert await within(layer.receive(channel)) == {"type": "m"}
        finally:
            await layer.close()


async def test_several_hosts_shard_groups_and_channels_across_servers(prefix):
    with EmbeddedRedis() as first, EmbeddedRedis() as second:
        hosts = [first.url, second.url]
        a = BroadcastChannelLayer(hosts=hosts, prefix=prefix)
        b = BroadcastChannelLayer(hosts=hosts, prefix=prefix)
        try:
            channel = await a.new_channel()
            groups = [f"shard-{i}" for i in range(12)]
            for group in groups:
                await a.group_add(group, channel)
            for group in groups:
                await b.group_send(group, {"type": "m", "group": group})
            got = {(await within(a.receive(channel)))["group"] for _ in groups}
            assert got == set(groups)
            for n in range(8):
                await b.send(f"queue-{n}", {"type": "m", "n": n})
            for n in range(8):
                assert (await within(a.receive(f"queue-{n}")))["n"] == n
            per_server = []  # both servers carry some of the groups
            for server in (first, second):
                client = redis.Redis.from_url(server.url)
                per_server.append(len(client.pubsub_channels(f"{prefix}:group:*")))
                client.close()
            assert sum(per_server) == len(groups)
            assert all(count > 0 for count in per_server)
        finally:
            await a.close()
            await b.close()


@pytest.fixture
def sentinel_port(redis_server, tmp_path):
    """A real redis-sentinel watching the session's server as master "mymaster"."""
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:  # start-up of the sentinel process
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture
async def sentinel_pair(sentinel_port, prefix):
    """Two layers configured with the sentinel, and a channel of the first in a group."""
    host = {"sentinels": [("127.0.0.1", sentinel_port)], "master_name": "mymaster"}
    a = BroadcastChannelLayer(hosts=[host], prefix=prefix)
    b = BroadcastChannelLayer(hosts=[host], prefix=prefix)
    try:
        channel = await a.new_channel()
        await a.group_add("via-sentinel", channel)
        yield a, b, channel
    finally:
        await a.close()
        await b.close()


async def test_sentinel_hosts_find_the_master(sentinel_pair):
    a, b, channel = sentinel_pair
    await b.group_send("via-sentinel", {"type": "m"})
    assert await within(a.receive(channel)) == {"type": "m"}
    # The sync registry's waiting pool finds the master through the sentinels too.
    assert await asyncio.to_thread(b.sync_registry.room_size, "via-sentinel") == 1
    b.sync_registry.close()


async def test_sentinel_hosts_survive_killed_connections(sentinel_pair, redis_server):
    """The guard covers Sentinel's managed connections too: the next call succeeds."""
    a, b, channel = sentinel_pair
    await b.group_send("via-sentinel", {"type": "m", "n": 0})
    assert await within(a.receive(channel)) == {"type": "m", "n": 0}
    assert faults.kill_clients(redis_server.url, "normal") >= 1
    assert await b.group_send("via-sentinel", {"type": "m", "n": 1}) == 1
    assert await within(a.receive(channel)) == {"type": "m", "n": 1}
    assert await b.registry.room_size("via-sentinel") == 1


# -- one declaration per option ---------------------------------------------------------


def test_the_layers_keyword_arguments_are_the_declared_options():
    """Name, order, default and annotation of each keyword argument come from conf.py."""
    parameters = list(inspect.signature(BroadcastChannelLayer.__init__).parameters.values())[1:]
    assert [p.name for p in parameters] == list(conf.OPTIONS)
    for parameter in parameters:
        option = conf.OPTIONS[parameter.name]
        assert parameter.default == option.default, parameter.name
        assert parameter.annotation == option.accepts, parameter.name


def test_an_absent_key_takes_the_declared_default():
    config = BroadcastChannelLayer().config
    for name, option in conf.OPTIONS.items():
        assert getattr(config, name) == option.validate(name, option.default), name


@pytest.mark.parametrize("name", list(conf.OPTIONS))
def test_every_option_reaches_the_layers_config(name):
    """A value given for a key is validated and stored (not dropped on the way)."""
    given = {"hosts": ["redis://example:6380/1"], "prefix": "p", "channel_capacity": {"a*": 3},
             "symmetric_encryption_keys": ["k"], "serializer_format": "json",
             "node_ttl": 99.5, "cluster": True,
             "history": {"chat.*": {"size": 5, "ttl": 60}},
             "durable_channels": {"jobs.*": {"claim_after": 5}}}.get(name, 7)  # fmt: skip
    layer = BroadcastChannelLayer(**{name: given})
    assert getattr(layer.config, name) == conf.OPTIONS[name].validate(name, given)
    assert getattr(layer.config, name) != getattr(BroadcastChannelLayer().config, name)


async def test_a_cluster_client_takes_its_startup_nodes_and_tls_from_hosts():
    """rediss:// makes every cluster connection TLS; the first entry's password is used."""
    from redis.asyncio.connection import SSLConnection

    from broadcast_layer._redis.clients import make_cluster_client

    config = conf.build_config(
        {"hosts": ["rediss://:secret@10.0.0.1:7000", ("10.0.0.2", 7001)], "cluster": True}
    )
    client = make_cluster_client(config.hosts)
    try:
        assert sorted(client.nodes_manager.startup_nodes) == ["10.0.0.1:7000", "10.0.0.2:7001"]
        kwargs = client.nodes_manager.connection_kwargs
        assert issubclass(kwargs["connection_class"], SSLConnection)
        assert kwargs["password"] == "secret"
        # redis-py's own retries are off: retry.py decides what is sent again.
        assert client.retry._retries == 0  # no public accessor before redis-py 5.1
    finally:
        await client.aclose()


def test_build_config_names_an_unknown_key():
    with pytest.raises(TypeError, match="'hots'"):
        conf.build_config({"hots": ["redis://localhost"]})


DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_the_docs_table_of_keys_is_the_declaration():
    docs = DOCS.read_text()
    start = docs.index("| Key | Type |")
    table = docs[start : docs.index("\n\n", start) + 1]
    assert table == conf.markdown_table(), (
        "docs/configuration.md's table of keys is out of date; replace it with:\n"
        + conf.markdown_table()
    )


def test_the_docs_example_config_names_every_key():
    example = DOCS.read_text().split("```python", 1)[1].split("```", 1)[0]
    assert re.findall(r'^ {12}"(\w+)":', example, flags=re.M) == list(conf.OPTIONS)


@pytest.mark.parametrize(
    "name", [name for name, option in conf.OPTIONS.items() if option.kind[:3] in ("int", "num")]
)
def test_the_documented_type_is_the_one_validation_enforces(name):
    """An option documented as int refuses 1.5; one documented as a number takes it."""
    option = conf.OPTIONS[name]
    if option.kind.startswith("int"):
        with pytest.raises(ConfigurationError, match=name):
            option.validate(name, 1.5)
    else:
        assert option.validate(name, 1.5) == 1.5
    for bad in (0, -1, True):
        with pytest.raises(ConfigurationError, match=name):
            option.validate(name, bad)
