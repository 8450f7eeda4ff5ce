-- Schema version 5: protective children (stop-loss, take-profit) of a bracket.
-- Applied by data_lake.db.migrate() after version 4; never edited once shipped.

ALTER TABLE order_intents ADD COLUMN aux_price REAL;    -- a stop's trigger price
ALTER TABLE order_intents ADD COLUMN parent_ref TEXT;   -- a child's parent orderRef
CREATE INDEX IF NOT EXISTS order_intents_parent ON order_intents(parent_ref);
