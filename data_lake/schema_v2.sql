-- Schema version 2: decisions carry their inputs, and views answer the common questions.
-- Applied by data_lake.db.migrate() after version 1; never edited once shipped.

ALTER TABLE decisions ADD COLUMN kelly_fraction REAL;
ALTER TABLE decisions ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';   -- JSON: confidence,
                                                                      -- consensus, price, ...
CREATE INDEX IF NOT EXISTS decisions_cycle ON decisions(cycle_id);
CREATE INDEX IF NOT EXISTS signals_cycle ON signals(cycle_id);
CREATE INDEX IF NOT EXISTS order_intents_decision ON order_intents(decision_id);
CREATE INDEX IF NOT EXISTS safety_events_ref ON safety_events(order_ref);

-- One row per execution with the intent, the decision and the cycle behind it.
CREATE VIEW IF NOT EXISTS trade_story AS
SELECT e.exec_time, e.exec_id, e.order_ref, e.symbol, e.sec_type, e.expiry, e.strike,
       e.opt_right, e.side, e.shares, e.price, e.commission, e.realized_pnl,
       i.source AS intent_source, i.status AS intent_status, i.cycle_id, i.decision_id,
       d.reason AS decision_reason, d.sources AS decision_sources, d.kelly_fraction
FROM executions e
LEFT JOIN order_intents i ON i.order_ref = e.order_ref
LEFT JOIN decisions d ON d.id = i.decision_id;

-- Realised PnL and commissions per day, instance and symbol (an execution's instances are
-- the sources of the decision behind it; watchdog and manual fills show as their source).
CREATE VIEW IF NOT EXISTS daily_pnl_by_instance_symbol AS
SELECT substr(e.exec_time, 1, 10) AS day,
       COALESCE(j.value, i.source, 'unknown') AS instance,
       e.symbol,
       COUNT(*) AS fills,
       SUM(COALESCE(e.realized_pnl, 0)) AS realized_pnl,
       SUM(COALESCE(e.commission, 0)) AS commission
FROM executions e
LEFT JOIN order_intents i ON i.order_ref = e.order_ref
LEFT JOIN decisions d ON d.id = i.decision_id
LEFT JOIN json_each(COALESCE(d.sources, '[]')) j
GROUP BY day, instance, e.symbol;

CREATE VIEW IF NOT EXISTS llm_spend_by_instance_day AS
SELECT substr(created_at, 1, 10) AS day, instance_id, model,
       COUNT(*) AS calls,
       SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
       SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens,
       ROUND(SUM(cost_usd), 6) AS cost_usd
FROM llm_calls
GROUP BY day, instance_id, model;

CREATE VIEW IF NOT EXISTS refusals_by_reason AS
SELECT substr(at, 1, 10) AS day, source, reason, COUNT(*) AS refusals
FROM safety_events
WHERE kind = 'gate_refusal'
GROUP BY day, source, reason;

CREATE VIEW IF NOT EXISTS breaker_timeline AS
SELECT at, from_state, to_state, source, actor, reason, generation
FROM breaker_history
ORDER BY id;
