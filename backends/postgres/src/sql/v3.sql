-- hookspool schema, version 3: only items of queues with a TTL enter the TTL index.
--
-- Version 1 indexed every pending item by age (`items_age`), for the TTL sweep, which only a
-- queue with a TTL runs: every push paid for an index entry that most queues never read
-- (batches of 1024 pushed 0.63x of the plain-SQL baseline with it, 0.74x without). Now an
-- item carries `ttl_from` (its `created_at`) only while it is pending in a queue with a TTL,
-- and the TTL index holds only those items:
--   - a push sets it when its queue has a TTL;
--   - every other move to pending (a settle, a lease running out) sets it;
--   - a queue that gains a TTL gives it to its pending items in the same transaction
--     (`update_queue`), having waited for the applications' transactions that pushed to it
--     (their pushes lock the queue row). The backend's own pushes do not lock the queue row,
--     so one that read the queue just before the TTL was added may still land without it:
--     the queue is noted in `ttl_gains`, and once the grace period of the trash has passed
--     (those pushes have landed by then), `catch_up_ttl` gives the TTL to what they left.
--
-- Upgrading: this migration scans the items once (to set `ttl_from` and build the new
-- index) and holds the items table meanwhile. Stop processes with older hookspool code
-- before one with this version opens the schema: their pushes would not set `ttl_from`, so
-- items they push to a queue with a TTL would not expire.

ALTER TABLE {schema}.items ADD COLUMN ttl_from bigint;

UPDATE {schema}.items i SET ttl_from = i.created_at
FROM {schema}.queues q
WHERE i.gen = q.gen AND q.ttl_ms IS NOT NULL AND i.phase = 'pending';

DROP INDEX {schema}.items_age;
-- The TTL sweep: pending items of queues with a TTL, by age.
CREATE INDEX items_ttl ON {schema}.items (gen, ttl_from)
    WHERE phase = 'pending' AND ttl_from IS NOT NULL;

-- Queues that gained a TTL, until the pushes that raced the change have been given it.
CREATE TABLE {schema}.ttl_gains (
    gen    bigint PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT now()
);

-- (The push's text as it was then; version 7 replaces it.)
CREATE OR REPLACE FUNCTION {schema}.push_many(
    p_queue text, p_payloads bytea[], p_metadata json[], p_not_before bigint[], p_now bigint
) RETURNS bigint[] LANGUAGE sql AS $$
WITH q AS (
    SELECT gen, key_seq, ttl_ms FROM {schema}.queues WHERE id = $1 FOR KEY SHARE
), ins AS (
    INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, not_before, metadata, payload,
                                ttl_from)
    SELECT q.gen, nextval(q.key_seq), 'pending', $5, $5, coalesce(u.nb, $5),
           coalesce(u.m, '{}'::json), u.p, CASE WHEN q.ttl_ms IS NOT NULL THEN $5::bigint END
    FROM q, unnest($2::bytea[], $3::json[], $4::bigint[]) WITH ORDINALITY AS u(p, m, nb, i)
    ORDER BY u.i
    RETURNING gen, key
), counted AS (
    INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
    SELECT gen, 'pending', {schema}.shard(), count(*) FROM ins GROUP BY gen
    ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM q)
    THEN coalesce((SELECT array_agg(key ORDER BY key) FROM ins), '{}') END
$$;

-- As in version 1, on `ttl_from`: a released lease gives the item its TTL back.
CREATE OR REPLACE FUNCTION {schema}.sweep_gen(q {schema}.queues, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- Each update runs only when a read of its index finds work: starting an UPDATE costs
    -- a claim more than the read, and there is usually nothing to do.
    released := 0;
    IF EXISTS (SELECT 1 FROM {schema}.items
               WHERE gen = q.gen AND phase = 'in_flight' AND lease_until <= p_now) THEN
        WITH due AS (
            SELECT key FROM {schema}.items
            WHERE gen = q.gen AND phase = 'in_flight' AND lease_until <= p_now
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i
            SET phase = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = p_now, updated_at = p_now, ttl_from = i.created_at
            FROM due WHERE i.gen = q.gen AND i.key = due.key
            RETURNING 1
        ) SELECT count(*) INTO released FROM done;
    END IF;
    expired := 0;
    IF q.ttl_ms IS NOT NULL AND (p_now = 9223372036854775807 OR p_now >= q.ttl_ms)
       AND EXISTS (SELECT 1 FROM {schema}.items
                   WHERE gen = q.gen AND phase = 'pending' AND ttl_from IS NOT NULL
                     AND (p_now = 9223372036854775807 OR ttl_from <= p_now - q.ttl_ms)) THEN
        WITH old AS (
            SELECT key FROM {schema}.items
            WHERE gen = q.gen AND phase = 'pending' AND ttl_from IS NOT NULL
              AND (p_now = 9223372036854775807 OR ttl_from <= p_now - q.ttl_ms)
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i SET phase = 'expired', updated_at = p_now
            FROM old WHERE i.gen = q.gen AND i.key = old.key
            RETURNING 1
        ) SELECT count(*) INTO expired FROM done;
    END IF;
    IF released + expired > 0 THEN
        PERFORM {schema}.add_counts(q.gen, ARRAY['in_flight', 'pending', 'pending', 'expired'],
            ARRAY[-released, released, -expired, expired]);
    END IF;
END $$;

-- Replaces a queue's settings; false for a missing queue. A queue that gains a TTL gives it
-- to its pending items at once, and is noted for `catch_up_ttl`.
CREATE FUNCTION {schema}.update_queue(p_id text, p_ttl_ms bigint, p_retention text, p_metadata json)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
BEGIN
    -- Waits for the transactions whose pushes to the queue have not committed yet.
    SELECT * INTO q FROM {schema}.queues WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE {schema}.queues SET ttl_ms = p_ttl_ms, retention = p_retention, metadata = p_metadata
    WHERE id = p_id;
    IF q.ttl_ms IS NULL AND p_ttl_ms IS NOT NULL THEN
        UPDATE {schema}.items SET ttl_from = created_at
        WHERE gen = q.gen AND phase = 'pending' AND ttl_from IS NULL;
        INSERT INTO {schema}.ttl_gains (gen) VALUES (q.gen)
        ON CONFLICT (gen) DO UPDATE SET since = now();
    END IF;
    RETURN true;
END $$;

-- Gives the TTL to the pending items that pushes racing a TTL's addition left without it,
-- for every queue that gained one at least `p_grace_ms` ago; returns whether any gain is
-- still waiting out its grace period.
CREATE FUNCTION {schema}.catch_up_ttl(p_grace_ms bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    FOR g IN SELECT gen FROM {schema}.ttl_gains
             WHERE since <= now() - make_interval(secs => p_grace_ms / 1000.0)
             FOR UPDATE SKIP LOCKED LOOP
        UPDATE {schema}.items SET ttl_from = created_at
        WHERE gen = g AND phase = 'pending' AND ttl_from IS NULL;
        DELETE FROM {schema}.ttl_gains WHERE gen = g;
    END LOOP;
    RETURN EXISTS (SELECT 1 FROM {schema}.ttl_gains);
END $$;
