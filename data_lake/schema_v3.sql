-- Schema version 3: decisions carry their signals as foreign keys (a link table), so the
-- chain from a fill to the instances behind it is a join, not a match on names.
-- Applied by data_lake.db.migrate() after version 2; never edited once shipped.

CREATE TABLE IF NOT EXISTS decision_signals (
    decision_id INTEGER NOT NULL REFERENCES decisions(id),
    signal_id INTEGER NOT NULL REFERENCES signals(id),
    PRIMARY KEY (decision_id, signal_id)
);
CREATE INDEX IF NOT EXISTS decision_signals_signal ON decision_signals(signal_id);

-- Decisions stored before version 3: linked the way `why` matched them until then (the
-- decision's source instances, same cycle, symbol and action, valid signals only).
INSERT OR IGNORE INTO decision_signals (decision_id, signal_id)
SELECT d.id, s.id
FROM decisions d, json_each(d.sources) j, signals s
WHERE s.cycle_id = d.cycle_id AND s.instance_id = j.value AND s.status = 'valid'
  AND s.symbol = d.symbol AND s.action = d.action;
