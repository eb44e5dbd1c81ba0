-- Writes one group of saves (services/group_commit.py) in one statement: the events table's
-- lock, the checks, the receipts, the events, their correlation ids and the notification.
-- Parameters are parallel arrays: each event's fields, the number of the save it belongs to and
-- the correlation id of that save; each receipt's fields and its save. (Arrays of plain types,
-- not of the stored-event composite: the client sends those in binary, cheaply.) Returns one row per refused
-- save (outcome 'version' or 'receipt') and one per stored event (outcome 'ok', with its
-- notification id), in notification order.
-- Placeholders: {schema} {events} {receipts} {correlations} {channel}.
CREATE OR REPLACE FUNCTION {schema}.reserves_save_group(
    p_ids uuid[], p_versions bigint[], p_topics text[], p_states bytea[], p_event_saves int[],
    p_correlations text[],
    p_keys text[], p_fingerprints text[], p_statuses int[], p_bodies jsonb[], p_key_saves int[],
    p_lock_timeout text)
RETURNS TABLE (save_no int, outcome text, notification_id bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $body$
#variable_conflict use_column
DECLARE
    refused_versions int[];
    refused_receipts int[];
    refused int[];
    inserted_keys text[];
    late int[];
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE;

    -- a version stored before, or taken by an earlier save of this group
    WITH g AS (
        SELECT u.o, u.v, u.s, row_number() OVER (PARTITION BY u.o, u.v ORDER BY u.s) AS r
        FROM unnest(p_ids, p_versions, p_event_saves) AS u(o, v, s))
    -- (LATERAL … LIMIT 1: one index probe per event, never a scan of the whole table)
    SELECT coalesce(array_agg(DISTINCT g.s), '{{}}') INTO refused_versions
    FROM g LEFT JOIN LATERAL (
        SELECT 1 AS found FROM {schema}.{events} t
        WHERE t.originator_id = g.o AND t.originator_version = g.v LIMIT 1) x ON true
    WHERE g.r > 1 OR x.found IS NOT NULL;

    -- a receipt key stored before, or used by an earlier save of this group
    WITH k AS (
        SELECT u.k, u.s, row_number() OVER (PARTITION BY u.k ORDER BY u.s) AS r
        FROM unnest(p_keys, p_key_saves) AS u(k, s)
        WHERE NOT (u.s = ANY(refused_versions)))
    SELECT coalesce(array_agg(DISTINCT k.s), '{{}}') INTO refused_receipts
    FROM k LEFT JOIN LATERAL (
        SELECT 1 AS found FROM {schema}.{receipts} t WHERE t.key = k.k LIMIT 1) x ON true
    WHERE k.r > 1 OR x.found IS NOT NULL;
    refused := refused_versions || refused_receipts;

    -- receipts are also written by refusals, without the table lock: the key settles that race
    WITH ins AS (
        INSERT INTO {schema}.{receipts} (key, fingerprint, status, body)
        SELECT u.k, u.f, u.st, u.b
        FROM unnest(p_keys, p_fingerprints, p_statuses, p_bodies, p_key_saves)
             AS u(k, f, st, b, s)
        WHERE NOT (u.s = ANY(refused))
        ON CONFLICT (key) DO NOTHING RETURNING key)
    SELECT coalesce(array_agg(ins.key), '{{}}') INTO inserted_keys FROM ins;
    SELECT coalesce(array_agg(DISTINCT u.s), '{{}}') INTO late
    FROM unnest(p_keys, p_key_saves) AS u(k, s)
    WHERE NOT (u.s = ANY(refused)) AND NOT (u.k = ANY(inserted_keys));
    IF cardinality(late) > 0 THEN
        DELETE FROM {schema}.{receipts} t USING unnest(p_keys, p_key_saves) AS u(k, s)
        WHERE t.key = u.k AND u.s = ANY(late) AND u.k = ANY(inserted_keys);
        refused_receipts := refused_receipts || late;
        refused := refused || late;
    END IF;

    RETURN QUERY SELECT DISTINCT v.s, 'version'::text, NULL::bigint
                 FROM unnest(refused_versions) AS v(s);
    RETURN QUERY SELECT DISTINCT r.s, 'receipt'::text, NULL::bigint
                 FROM unnest(refused_receipts) AS r(s);

    IF EXISTS (SELECT 1 FROM unnest(p_event_saves) AS u(s) WHERE NOT (u.s = ANY(refused))) THEN
        RETURN QUERY
        WITH g AS (
            SELECT u.o, u.v, u.tp, u.st, u.s, u.c, u.n
            FROM unnest(p_ids, p_versions, p_topics, p_states, p_event_saves, p_correlations)
                 WITH ORDINALITY AS u(o, v, tp, st, s, c, n)
            WHERE NOT (u.s = ANY(refused))),
        ins AS (
            INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state)
            SELECT g.o, g.v, g.tp, g.st FROM g ORDER BY g.n
            RETURNING {events}.originator_id, {events}.originator_version,
                      {events}.notification_id),
        cor AS (
            INSERT INTO {schema}.{correlations} (originator_id, originator_version,
                                                 correlation_id)
            SELECT g.o, g.v, g.c FROM g
            WHERE g.c IS NOT NULL
            ON CONFLICT DO NOTHING)
        SELECT g.s, 'ok'::text, ins.notification_id
        FROM ins JOIN g ON g.o = ins.originator_id AND g.v = ins.originator_version
        ORDER BY ins.notification_id;
        NOTIFY {channel};
    END IF;
END;
$body$;
