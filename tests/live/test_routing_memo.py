"""live/routing's answers of `ip` and /proc/sys: remembered for MEMO_SECONDS, bounded by MEMO_MAX."""

from ruletrace.live import routing


def test_an_answer_is_reused_while_young_and_asked_again_when_old(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    asked: list[str] = []
    memo: dict = {}

    def get(value: str):
        return lambda: asked.append(value) or value

    assert routing._remembered(memo, "k", get("a")) == "a"
    clock[0] += routing.MEMO_SECONDS / 2
    assert routing._remembered(memo, "k", get("b")) == "a"  # young: not asked again
    clock[0] += routing.MEMO_SECONDS
    assert routing._remembered(memo, "k", get("c")) == "c"  # old: asked again
    assert asked == ["a", "c"]


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(routing, "MEMO_MAX", 3)
    memo: dict = {}
    for i in range(10):
        routing._remembered(memo, i, lambda i=i: i)
        assert len(memo) <= 3
    assert memo[9][1] == 9


def test_sysctl_goes_through_the_memo(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(routing, "_sysctls", {})
    monkeypatch.setattr(routing, "_sysctl_uncached", lambda name: calls.append(name) or "1")
    assert routing.sysctl("net.ipv4.ip_forward") == "1"
    assert routing.sysctl("net.ipv4.ip_forward") == "1"
    assert calls == ["net.ipv4.ip_forward"]
