-- The 'orders' projection: orders and their lines, stock items and who holds their reserves.
CREATE TABLE IF NOT EXISTS rm_stock (
    warehouse text NOT NULL,
    sku text NOT NULL,
    on_hand bigint NOT NULL DEFAULT 0,
    reserved bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (warehouse, sku)
);
CREATE TABLE IF NOT EXISTS rm_orders (
    order_id text PRIMARY KEY,
    aggregate_id uuid NOT NULL UNIQUE,
    number text NOT NULL,
    date timestamp NOT NULL,
    partner text NOT NULL,
    manager text NOT NULL,
    status text NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_orders_manager ON rm_orders (manager, date DESC);
CREATE TABLE IF NOT EXISTS rm_order_lines (
    order_id text NOT NULL,
    warehouse text NOT NULL,
    sku text NOT NULL,
    position int NOT NULL,
    ordered bigint NOT NULL,
    reserved bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, warehouse, sku)
);
CREATE TABLE IF NOT EXISTS rm_reserves (
    warehouse text NOT NULL,
    sku text NOT NULL,
    order_id text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (warehouse, sku, order_id)
);
