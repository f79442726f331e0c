ALTER TABLE orders ADD COLUMN currency char(3) NOT NULL DEFAULT 'EUR',
    ADD COLUMN IF NOT EXISTS status text;
ALTER TABLE orders DROP COLUMN note;
ALTER TABLE orders RENAME COLUMN total_cents TO amount_cents;
CREATE TEMP TABLE scratch (x int);
CREATE TABLE audit.events (id bigint, payload jsonb);
DROP TABLE IF EXISTS legacy_orders;
