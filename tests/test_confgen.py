from natslab.runtime import confgen


def test_render_blocks_lists_and_quoting():
    text = confgen.render({
        "server_name": "n1",
        "port": 4222,
        "debug": False,
        "jetstream": {"store_dir": "/tmp/x y", "max_memory_store": confgen.Raw("256MB")},
        "cluster": {"routes": ["nats-route://a:1", "nats-route://b:2"]},
        "accounts": {"A": {"users": [{"user": "u", "password": "p"}]}},
        "skip": None,
    }, comment="hello")
    assert text.startswith("# hello\n")
    assert 'server_name: "n1"' in text and "port: 4222" in text and "debug: false" in text
    assert 'store_dir: "/tmp/x y"' in text and "max_memory_store: 256MB" in text
    assert '    "nats-route://a:1"\n    "nats-route://b:2"' in text
    assert "skip" not in text
    assert 'user: "u"' in text


def test_merge_is_deep_and_none_removes():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert confgen.merge(base, {"a": {"c": 5}, "d": None}) == {"a": {"b": 1, "c": 5}}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}
