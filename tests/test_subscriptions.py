"""The ref-counting state machine, on its own (pure logic, no Redis)."""

import random

from broadcast_layer._node.subscriptions import Subscriptions


def test_first_member_wants_and_last_member_unwants():
    subs = Subscriptions()
    assert subs.add("g", "a", 10) is True
    assert subs.add("g", "b", 10) is False
    assert subs.discard("g", "a") is False
    assert "g" in subs
    assert subs.discard("g", "b") is True
    assert "g" not in subs


def test_discarding_a_non_member_changes_nothing():
    subs = Subscriptions()
    subs.add("g", "a", 10)
    assert subs.discard("g", "zzz") is False
    assert subs.discard("other", "a") is False
    assert subs.members("g") == {"a": 10}


def test_re_adding_refreshes_the_deadline_without_counting_twice():
    subs = Subscriptions()
    subs.add("g", "a", 10)
    assert subs.add("g", "a", 20) is False
    assert subs.members("g") == {"a": 20}
    assert subs.discard("g", "a") is True


def test_remove_channel_leaves_every_group_and_reports_the_emptied_ones():
    subs = Subscriptions()
    subs.add("g1", "a", 10)
    subs.add("g2", "a", 10)
    subs.add("g2", "b", 10)
    assert subs.remove_channel("a") == ["g1"]
    assert subs.wanted() == {"g2"}
    assert list(subs.groups_of("a")) == []


def test_expire_drops_only_memberships_past_their_deadline():
    subs = Subscriptions()
    subs.add("old", "a", 5)
    subs.add("mixed", "a", 5)
    subs.add("mixed", "b", 50)
    assert sorted(subs.expire(now=10)) == [("mixed", "a"), ("old", "a")]
    assert subs.wanted() == {"mixed"}
    assert subs.members("mixed") == {"b": 50}


def test_random_churn_matches_a_naive_model():
    rng = random.Random(7)
    subs, model = Subscriptions(), {}
    for _ in range(5000):
        group, channel = f"g{rng.randrange(5)}", f"c{rng.randrange(8)}"
        before = bool(model.get(group))
        if rng.random() < 0.5:
            model.setdefault(group, set()).add(channel)
            changed = subs.add(group, channel, 1.0)
        else:
            model.get(group, set()).discard(channel)
            changed = subs.discard(group, channel)
        assert changed == (before != bool(model.get(group)))
        assert subs.wanted() == {g for g, members in model.items() if members}
