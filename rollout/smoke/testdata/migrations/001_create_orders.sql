-- Orders and their items.
CREATE TABLE IF NOT EXISTS orders (
    id          bigserial PRIMARY KEY,
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    note        text DEFAULT 'none; really',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_total_positive CHECK (total_cents > 0)
);

CREATE TABLE order_items (
    order_id bigint REFERENCES orders (id),
    sku      text NOT NULL,
    "Quantity" integer NOT NULL,
    PRIMARY KEY (order_id, sku)
);

/* a function whose body holds semicolons; it must not split statements */
CREATE FUNCTION touch() RETURNS trigger AS $$
BEGIN
  NEW.created_at := now();
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
