-- Read models: rebuilt from the event store at will (`reserves replay`).
CREATE TABLE IF NOT EXISTS rm_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);
-- 'views': the projector's position; 'relay': the last position published to Kafka.
INSERT INTO rm_tracking (name) VALUES ('views'), ('relay') ON CONFLICT DO NOTHING;
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
CREATE TABLE IF NOT EXISTS rm_requests (
    request_id text PRIMARY KEY,
    status text NOT NULL,
    from_order_id text NOT NULL,
    to_order_id text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    requested bigint NOT NULL,
    given bigint NOT NULL DEFAULT 0,
    requester text NOT NULL,
    owner text NOT NULL,
    reason text,
    from_order_number text NOT NULL,
    from_order_date timestamp NOT NULL,
    to_order_number text NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_requests_pending ON rm_requests (expires_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS rm_inbox (
    id text PRIMARY KEY,
    manager text NOT NULL,
    kind text NOT NULL,
    text text NOT NULL,
    request_id text NOT NULL,
    created_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_inbox_manager ON rm_inbox (manager, position DESC);
