-- The 'requests' projection: reserve requests and the managers' inboxes.
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
CREATE INDEX IF NOT EXISTS rm_requests_from ON rm_requests (from_order_id);
CREATE INDEX IF NOT EXISTS rm_requests_to ON rm_requests (to_order_id);
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
