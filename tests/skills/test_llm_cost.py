"""LLM cost: prompt caching in the local API server (through the real SDK), the swarm's
cache-friendly requests, and the usage and dollars it records. No sleeps: the server's clock
is injected, and the one concurrency case is ordered with events."""

import json
import math
import threading
import tomllib
from pathlib import Path

import anthropic
import pytest
import pytest_asyncio
from anthropic_server import CHARS_PER_TOKEN, AnthropicStub, Reply
from lake import rows as lake_rows

from data_lake import insert_cycle
from runtime.config import parse_config
from skills.swarm_core import consult_swarm, load_instances, shared_prompt
from skills.swarm_models import MarketContext, OptionView, SymbolView
from skills.swarm_providers import AnthropicProvider, SwarmBudget, Usage, cost_usd

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "swarm_intelligence/templates"
CONFIG = parse_config(tomllib.loads((ROOT / "config/paper.toml").read_text()))
LIMITS = CONFIG.risk.model_dump()
PRICES = CONFIG.swarm.prices
SONNET = "claude-sonnet-4-6"


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class ClockedStub(AnthropicStub):
    """The local API server on a clock the test moves by hand."""

    now = 1000.0


@pytest.fixture
def stub():
    s = ClockedStub().start()
    s.clock = lambda: s.now
    yield s
    s.stop()


@pytest.fixture
def client(stub):
    c = anthropic.Anthropic(api_key="sk-ant-test-cost", base_url=stub.base_url, max_retries=0)
    yield c
    c.close()


LONG = "Rules of the house. " * 400  # 8000 characters: 2000 tokens, above Sonnet's 1024
QUESTION = "What now?"


def ask(client, system, model=SONNET, question=QUESTION, **kw):
    return client.messages.create(
        model=model,
        max_tokens=64,
        system=system,
        messages=[{"role": "user", "content": question}],
        **kw,
    ).usage


def cached(text, **cc):
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", **cc}}]


# --- the server's prompt cache, through the SDK ---------------------------------------------
def test_first_request_writes_the_cache_and_a_second_within_the_ttl_reads_it(stub, client):
    first = ask(client, cached(LONG))
    assert first.cache_creation_input_tokens == tokens(LONG) == 2000
    assert first.cache_read_input_tokens == 0
    assert first.input_tokens == tokens(QUESTION)  # only what follows the breakpoint
    assert first.cache_creation.ephemeral_5m_input_tokens == 2000
    stub.now += 299
    second = ask(client, cached(LONG), question="And now?")
    assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (2000, 0)
    assert second.input_tokens == tokens("And now?")


def test_the_entry_expires_after_its_ttl_and_a_read_refreshes_it(stub, client):
    ask(client, cached(LONG))
    stub.now += 250
    assert ask(client, cached(LONG)).cache_read_input_tokens == 2000  # refreshed: 5 more min
    stub.now += 250
    assert ask(client, cached(LONG)).cache_read_input_tokens == 2000
    stub.now += 301
    miss = ask(client, cached(LONG))
    assert (miss.cache_read_input_tokens, miss.cache_creation_input_tokens) == (0, 2000)


def test_a_one_hour_entry_is_billed_as_such_and_outlives_five_minutes(stub, client):
    first = ask(client, cached(LONG, ttl="1h"))
    assert first.cache_creation.ephemeral_1h_input_tokens == 2000
    assert first.cache_creation.ephemeral_5m_input_tokens == 0
    stub.now += 3000
    assert ask(client, cached(LONG, ttl="1h")).cache_read_input_tokens == 2000
    stub.now += 3601
    assert ask(client, cached(LONG, ttl="1h")).cache_read_input_tokens == 0


def test_nothing_is_cached_below_the_models_minimum_length(stub, client):
    short = "x" * (1023 * CHARS_PER_TOKEN)  # 1023 tokens
    for _ in range(2):
        u = ask(client, cached(short))
        assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (0, 0)
        assert u.input_tokens == 1023 + tokens(QUESTION)  # no error, no surcharge
    # 2000 tokens caches on Sonnet, not on Haiku 4.5 (4096)
    assert ask(client, cached(LONG), model="claude-haiku-4-5").cache_creation_input_tokens == 0
    assert ask(client, cached(LONG)).cache_creation_input_tokens == 2000


def test_a_changed_prefix_misses_and_a_later_breakpoint_finds_an_earlier_entry(stub, client):
    ask(client, cached(LONG))
    other = ask(client, cached(LONG.replace("house", "HOUSE", 1)))
    assert (other.cache_read_input_tokens, other.cache_creation_input_tokens) == (0, 2000)
    other_model = ask(client, cached(LONG), model="claude-opus-4-1")
    assert other_model.cache_read_input_tokens == 0  # caches are per model
    # the look-back: the breakpoint now sits one block later, the entry is found before it
    system = [{"type": "text", "text": LONG}, *cached("Today: Sunday.")]
    u = ask(client, system)
    assert u.cache_read_input_tokens == 2000
    assert u.cache_creation_input_tokens == tokens("Today: Sunday.")


def test_tools_come_first_in_the_prefix(stub, client):
    tool = {
        "name": "lookup",
        "description": "d" * 6000,
        "input_schema": {"type": "object"},
        "cache_control": {"type": "ephemeral"},
    }
    first = ask(client, "short system", tools=[tool])
    size = tokens(
        json.dumps(
            {k: v for k, v in tool.items() if k != "cache_control"},
            sort_keys=True,
            separators=(",", ":"),
        )
    )
    assert first.cache_creation_input_tokens == size
    assert first.input_tokens == tokens("short system") + tokens(QUESTION)
    # a different system prompt after the tools still reads the tools' entry
    assert ask(client, "another system", tools=[tool]).cache_read_input_tokens == size


def test_automatic_caching_and_tool_choice(stub, client):
    tool = {"name": "t", "input_schema": {"type": "object"}}
    long_question = "Please consider this. " * 300  # 6600 characters: 1650 tokens
    auto = {"type": "ephemeral"}
    kw = dict(question=long_question, tools=[tool], cache_control=auto)
    first = ask(client, "sys", **kw)  # the breakpoint goes on the last block: the question
    assert first.input_tokens == 0 and first.cache_creation_input_tokens > 1650
    assert ask(client, "sys", **kw).cache_read_input_tokens == first.cache_creation_input_tokens
    # changing tool_choice invalidates the messages' cache, not the tools' and system's
    question = [{"type": "text", "text": long_question, "cache_control": auto}]
    system = cached(LONG)
    through_system = 2000 + tokens(json.dumps(tool, separators=(",", ":")))
    ask(client, system, question=question, tools=[tool])
    same = ask(client, system, question=question, tools=[tool])
    assert same.cache_read_input_tokens == through_system + tokens(long_question)
    other = ask(client, system, question=question, tools=[tool], tool_choice={"type": "any"})
    assert other.cache_read_input_tokens == through_system
    assert other.cache_creation_input_tokens == tokens(long_question)


def test_count_tokens_counts_without_touching_the_cache(stub, client):
    n = client.messages.count_tokens(
        model=SONNET, system=cached(LONG), messages=[{"role": "user", "content": QUESTION}]
    )
    assert n.input_tokens == 2000 + tokens(QUESTION)
    assert ask(client, cached(LONG)).cache_read_input_tokens == 0  # nothing was cached
    assert stub.paths() == {"/v1/messages/count_tokens": 1, "/v1/messages": 1}


@pytest.mark.parametrize(
    ("system", "message"),
    [
        (cached(LONG, ttl="10m"), "ttl"),
        ([{"type": "text", "text": LONG, "cache_control": {"type": "persistent"}}], "ephemeral"),
        (cached(LONG, scope="global"), "Extra inputs are not permitted"),
        ([{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}], "empty text"),
        ([b for i in range(5) for b in cached(f"block {i}")], "A maximum of 4 blocks"),
        (cached("a") + cached("b", ttl="1h"), "must not come after"),
    ],
)
def test_malformed_cache_control_is_refused_like_the_api(stub, client, system, message):
    with pytest.raises(anthropic.BadRequestError, match=message) as info:
        ask(client, system)
    assert info.value.status_code == 400
    assert stub.usages() == []  # refused before any work: nothing billed, nothing cached


def test_a_new_entry_is_readable_only_once_its_response_begins(stub, client):
    arrived, release = threading.Event(), threading.Event()

    def held(body):
        arrived.set()
        assert release.wait(10)
        return Reply(body=stub.tool_answer([]))

    stub.script("first", held)
    results = {}

    def first():
        results["first"] = ask(client, cached(LONG), metadata={"user_id": "first"})

    t = threading.Thread(target=first)
    t.start()
    assert arrived.wait(10)  # the first request is in, its response not begun
    second = ask(client, cached(LONG))
    release.set()
    t.join(10)
    assert second.cache_creation_input_tokens == 2000  # both missed, both wrote
    assert results["first"].cache_creation_input_tokens == 2000
    assert ask(client, cached(LONG)).cache_read_input_tokens == 2000


# --- prices -----------------------------------------------------------------------------------
def test_cost_uses_the_cache_multipliers_and_the_configured_prices():
    m = 1_000_000
    assert cost_usd(SONNET, Usage(input_tokens=m)) == pytest.approx(3.0)
    assert cost_usd(SONNET, Usage(output_tokens=m)) == pytest.approx(15.0)
    assert cost_usd(SONNET, Usage(cache_write_tokens=m)) == pytest.approx(3.75)  # 1.25x
    assert cost_usd(SONNET, Usage(cache_write_tokens=m, cache_write_1h_tokens=m)) == 6.0  # 2x
    assert cost_usd(SONNET, Usage(cache_read_tokens=m)) == pytest.approx(0.3)  # 0.1x
    assert cost_usd(SONNET, Usage(input_tokens=m), {SONNET: (6.0, 30.0)}) == pytest.approx(6.0)
    assert cost_usd("claude-unknown", Usage(input_tokens=m)) == pytest.approx(15.0)


# --- the swarm --------------------------------------------------------------------------------
SYMBOLS = ("NVDA", "AMD", "TSLA", "JPM", "BAC", "GS", "SPY", "AAPL", "MSFT")


def big_context(as_of="2026-11-20T15:00:00Z", shift=0.0):
    """Nine symbols with eight puts each, as the sensor builds them: a shared snapshot
    well above the minimum cacheable length."""
    symbols = tuple(
        SymbolView(s, 100.0 + shift, 99.98 + shift, 100.02 + shift, 0.6, 0.9, 97.0) for s in SYMBOLS
    )
    options = tuple(
        OptionView(
            s, "20261218", 95.0 - 2 * k, "P", 1.9 - 0.2 * k, 2.1 - 0.2 * k, -0.3 + 0.03 * k, 27
        )
        for s in SYMBOLS
        for k in range(8)
    )
    return MarketContext(as_of, symbols, options)


def make_swarm(tmp_path, n):
    """n instances cycling through the shipped ones (one model, two templates)."""
    shipped = ROOT / "swarm_intelligence/active_instances"
    bases = [json.loads(p.read_text()) for p in sorted(shipped.glob("*.json"))]
    directory = tmp_path / "instances"
    directory.mkdir()
    for i in range(n):
        base = bases[i % len(bases)]
        (directory / f"inst_{i:03d}.json").write_text(json.dumps({**base, "id": f"inst_{i:03d}"}))
    return load_instances(directory, TEMPLATES, LIMITS)


@pytest_asyncio.fixture
async def provider(stub):
    p = AnthropicProvider("sk-ant-test-cost", stub.base_url, max_retries=0, timeout_s=10)
    yield p
    await p.close()


async def cycle(swarm, provider, context, db=None, **kw):
    instances, templates = swarm
    return await consult_swarm(
        instances,
        templates,
        context,
        provider,
        limits=LIMITS,
        max_concurrency=50,
        deadline_s=20.0,
        budget=kw.pop("budget", SwarmBudget(10_000_000, 100.0, 1000.0, prices=PRICES)),
        store=db,
        cycle_id=(db.call(insert_cycle, 1, timeout=5) or 1) if db is not None else None,
        **kw,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("warmup", [True, False])
async def test_n_instances_make_exactly_n_message_requests_and_no_other(
    tmp_path, stub, provider, warmup
):
    swarm = make_swarm(tmp_path, 12)
    budget = SwarmBudget(10_000_000, 100.0, 1000.0, prices=PRICES)
    result = await cycle(swarm, provider, big_context(), budget=budget, cache_warmup=warmup)
    assert [o.status for o in result.outcomes] == ["ok"] * 12
    assert stub.paths() == {"/v1/messages": 12}  # the budget check costs no request
    assert budget.usd == pytest.approx(result.cost_usd)  # reservations settled to real usage


@pytest.mark.asyncio
async def test_a_warm_swarm_writes_the_shared_prefix_once_and_reads_it_after(
    tmp_path, stub, provider, store
):
    db = store
    swarm = make_swarm(tmp_path, 10)
    context = big_context()
    shared = shared_prompt(context)
    result = await cycle(swarm, provider, context, db=db)
    usages = stub.usages()
    writes = [u for u in usages if u["cache_creation_input_tokens"]]
    reads = [u for u in usages if u["cache_read_input_tokens"]]
    assert len(usages) == 10 and len(writes) == 1 and len(reads) == 9
    prefix = writes[0]["cache_creation_input_tokens"]
    assert prefix >= tokens(shared.text)  # tools + rules + snapshot
    assert {u["cache_read_input_tokens"] for u in reads} == {prefix}
    # what the database holds is what the API reported, priced with the cache multipliers
    rows = lake_rows(db, "SELECT * FROM llm_calls")
    by_id = {o.instance_id: o for o in result.outcomes}
    for row in rows:
        o = by_id[row["instance_id"]]
        assert (row["input_tokens"], row["output_tokens"]) == (
            o.usage.input_tokens,
            o.usage.output_tokens,
        )
        assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (
            o.usage.cache_read_tokens,
            o.usage.cache_write_tokens,
        )
        expected = cost_usd(row["model"], o.usage, PRICES)
        assert row["cost_usd"] == pytest.approx(expected)
    assert sum(r["cache_write_tokens"] for r in rows) == prefix
    assert sum(r["cache_read_tokens"] for r in rows) == 9 * prefix
    assert {u["input_tokens"] for u in usages} == {
        u.input_tokens for u in (o.usage for o in result.outcomes)
    }
    # the next cycle within the TTL, same market: even the first instance reads
    stub.now += 60
    await cycle(swarm, provider, context)
    assert all(u["cache_read_input_tokens"] == prefix for u in stub.usages()[10:])
    # a new market snapshot: written once more, read by the others
    await cycle(swarm, provider, big_context("2026-11-20T15:01:00Z", shift=0.5))
    fresh = stub.usages()[20:]
    assert sum(1 for u in fresh if u["cache_creation_input_tokens"]) == 1


@pytest.mark.asyncio
async def test_the_warm_up_is_skipped_below_the_minimum_cacheable_length(tmp_path, stub, provider):
    swarm = make_swarm(tmp_path, 3)
    tiny = MarketContext("2026-11-20T15:00:00Z", (SymbolView("NVDA", 1, 1, 1, 0.5, 0.9, 1),))
    assert shared_prompt(tiny).estimate_tokens() < 1024
    together = threading.Barrier(3, timeout=10)  # passes only if all three are in at once

    def all_at_once(body):
        together.wait()
        return Reply(body=stub.tool_answer([]))

    stub.default = all_at_once
    result = await cycle(swarm, provider, tiny)
    assert [o.status for o in result.outcomes] == ["ok"] * 3  # nothing to warm: no waiting
    assert all(u["cache_creation_input_tokens"] == 0 for u in stub.usages())


@pytest.mark.asyncio
async def test_the_reservation_is_a_ceiling_that_prices_the_cache_write(tmp_path, stub, provider):
    swarm = make_swarm(tmp_path, 3)
    budget = SwarmBudget(10_000_000, 100.0, 1000.0, prices=PRICES)
    context = big_context()
    cacheable = shared_prompt(context).estimate_tokens()
    assert budget.reserve(SONNET, cacheable + 500, 1024, cacheable) is None
    worst = budget.usd
    assert worst == pytest.approx((cacheable * 3.75 + 500 * 3 + 1024 * 15) / 1e6)
    budget.settle(SONNET, cacheable + 500, 1024, Usage(), cacheable)
    assert budget.usd == pytest.approx(0.0) and budget.tokens == 0
    # every real call costs less than its reservation
    result = await cycle(swarm, provider, context, budget=budget)
    assert all(o.cost_usd < worst for o in result.outcomes)
