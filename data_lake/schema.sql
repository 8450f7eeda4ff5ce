-- Schema version 1. Applied by data_lake.db.migrate(); PRAGMA user_version records the version.
-- Later versions are forward migrations in data_lake/db.py (MIGRATIONS), never edits here.

CREATE TABLE IF NOT EXISTS cycles (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'running',      -- running | ok | error | timeout | skipped
    error TEXT,
    n_signals INTEGER NOT NULL DEFAULT 0,
    n_decisions INTEGER NOT NULL DEFAULT 0,
    n_orders INTEGER NOT NULL DEFAULT 0,
    pid INTEGER
);

CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    cycle_id INTEGER REFERENCES cycles(id),
    instance_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,                         -- ok | abstain | error | timeout | budget
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_ms REAL,
    error TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY,
    cycle_id INTEGER REFERENCES cycles(id),
    instance_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,                         -- valid | abstain
    reason TEXT,
    symbol TEXT, action TEXT, sec_type TEXT, expiry TEXT, strike REAL, opt_right TEXT,
    order_type TEXT, limit_price REAL, quantity REAL,
    confidence REAL, win_probability REAL, payoff_ratio REAL,
    rationale TEXT,
    model TEXT, template_hash TEXT, params_hash TEXT, prompt_hash TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    cycle_id INTEGER REFERENCES cycles(id),
    symbol TEXT NOT NULL, action TEXT NOT NULL, sec_type TEXT NOT NULL,
    expiry TEXT, strike REAL, opt_right TEXT,
    order_type TEXT NOT NULL, limit_price REAL, quantity REAL NOT NULL,
    reason TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',           -- JSON list of instance ids
    created_at TEXT NOT NULL
);

-- Written BEFORE placeOrder; order_ref is deterministic and unique (idempotency key).
CREATE TABLE IF NOT EXISTS order_intents (
    id INTEGER PRIMARY KEY,
    order_ref TEXT NOT NULL UNIQUE,
    cycle_id INTEGER,
    decision_id INTEGER,
    source TEXT NOT NULL,                         -- commander | watchdog | panic | person
    symbol TEXT NOT NULL, sec_type TEXT NOT NULL,
    expiry TEXT, strike REAL, opt_right TEXT, con_id INTEGER,
    action TEXT NOT NULL, quantity REAL NOT NULL,
    order_type TEXT NOT NULL, limit_price REAL, tif TEXT NOT NULL,
    status TEXT NOT NULL,                         -- pending | submitted | filled | cancelled |
                                                  -- rejected | not_sent | unknown
    broker_order_id INTEGER, perm_id INTEGER,
    filled REAL NOT NULL DEFAULT 0, avg_fill_price REAL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_intents_status ON order_intents(status);

CREATE TABLE IF NOT EXISTS orders (
    perm_id INTEGER PRIMARY KEY,
    order_ref TEXT,
    client_id INTEGER, order_id INTEGER,
    symbol TEXT, sec_type TEXT, action TEXT, quantity REAL, order_type TEXT, limit_price REAL,
    status TEXT NOT NULL,
    filled REAL NOT NULL DEFAULT 0, remaining REAL, avg_fill_price REAL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_ref ON orders(order_ref);

CREATE TABLE IF NOT EXISTS order_events (
    id INTEGER PRIMARY KEY,
    order_ref TEXT, perm_id INTEGER, order_id INTEGER, client_id INTEGER,
    status TEXT, filled REAL, remaining REAL, avg_fill_price REAL,
    error_code INTEGER, message TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_events_ref ON order_events(order_ref);

-- One row per execution, ever: exec_id is the key (duplicates and replays are ignored).
CREATE TABLE IF NOT EXISTS executions (
    exec_id TEXT PRIMARY KEY,
    order_ref TEXT, perm_id INTEGER, order_id INTEGER, client_id INTEGER,
    account TEXT,
    symbol TEXT NOT NULL, sec_type TEXT NOT NULL, expiry TEXT, strike REAL, opt_right TEXT,
    con_id INTEGER, multiplier REAL NOT NULL DEFAULT 1,
    side TEXT NOT NULL,                           -- BOT | SLD
    shares REAL NOT NULL, price REAL NOT NULL,
    exec_time TEXT NOT NULL,
    commission REAL, realized_pnl REAL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_ref ON executions(order_ref);

CREATE TABLE IF NOT EXISTS account_snapshots (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL, source TEXT NOT NULL, account TEXT,
    net_liquidation REAL, cash REAL, gross_position_value REAL,
    unrealized_pnl REAL, realized_pnl REAL, daily_pnl REAL,
    raw TEXT
);

CREATE TABLE IF NOT EXISTS position_snapshots (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL, source TEXT NOT NULL, account TEXT,
    con_id INTEGER, symbol TEXT NOT NULL, sec_type TEXT NOT NULL,
    expiry TEXT, strike REAL, opt_right TEXT, quantity REAL NOT NULL, avg_cost REAL
);

CREATE TABLE IF NOT EXISTS safety_events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL,                         -- gate | broker | watchdog | main_loop | person
    kind TEXT NOT NULL,                           -- gate_refusal | breaker_trip | reconcile ...
    severity TEXT NOT NULL,                       -- info | warning | critical
    reason TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',           -- JSON
    order_ref TEXT,
    cycle_id INTEGER
);
CREATE INDEX IF NOT EXISTS safety_events_kind ON safety_events(kind);

CREATE TABLE IF NOT EXISTS breaker_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL, since TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
    generation INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS breaker_history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    source TEXT NOT NULL, actor TEXT, reason TEXT NOT NULL, generation INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY,
    cycle_id INTEGER,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS snapshots_cycle ON snapshots(cycle_id);
