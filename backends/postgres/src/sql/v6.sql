-- hookspool schema, version 6: for the time a snapshot is held open, a claim and a
-- retention step that start after a given position, and counter shards by epoch.
--
-- While a session holds a snapshot open (a forgotten transaction, a long report, a
-- `pg_dump` of the primary), vacuum can free no row version that died after it was taken,
-- and the server cannot mark their index entries dead either. A claim reads the due index
-- (`items_due`) from its start: it then reads again, at every call, the entry of every item
-- claimed since the snapshot was taken, and visits that entry's row. With 60,000 items
-- claimed and acknowledged under a held snapshot, a claim of 100 read 1,525 buffers and took
-- 5 ms where it takes 0.1 ms, and the sweep it runs first read 90,000 rows of `items_leases`
-- to find nothing: each claim costs more than the last, and deliveries fall to a fifth.
--
-- `claim_after` leases from after a position `(not_before, key)` the caller remembers,
-- and does not sweep. The backend uses it only while it sees such a snapshot, and runs the
-- full `claim` (with its sweep) at least once a second meanwhile: that one picks up the
-- items that became due behind the position (a push whose transaction committed late, an
-- item pushed with a past `not_before`, a claim rolled back), and releases expired leases.
-- `prune_after` does the same for retention (below).
--
-- The counter rows. Every statement that changes phases adds to its session's counter row;
-- under a held snapshot each addition leaves the row's old version behind, and the next
-- one's `ON CONFLICT` visits them all to find the row. About three minutes into the soak's
-- hold, each lookup of the counters' primary key read 260 index entries, each the head of a
-- chain of versions, and pushes were most of what the server was running. So while a
-- process sees such a snapshot, each of its sessions moves to a new shard every second:
-- `shard()` now returns the session's setting as it is, which may be above {counter_shards}
-- (a shard of an epoch, `own + {counter_shards} × epoch`), and only a session without one
-- takes its process id's modulo {counter_shards}. A count sums every shard. Once the
-- snapshot is released, the process folds the rows of epochs back into the shards they came
-- from. No table is touched.
CREATE OR REPLACE FUNCTION {schema}.shard() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('hookspool.counter_shard', true), '')::integer,
                    pg_backend_pid() % {counter_shards})
$$;

CREATE FUNCTION {schema}.claim_after(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint,
    p_after_not_before bigint, p_after_key bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    claimed bigint;
    keys bigint[];
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    -- Planned at every call, as the claim is. The row comparison is a condition of the
    -- index scan: it starts at the position, not at the index's first entry.
    EXECUTE $sql$
    SELECT array_agg(key) FROM (
        SELECT key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND (not_before, key) > ($4, $5)
          AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO keys USING q.gen, p_now, p_limit, p_after_not_before, p_after_key;
    IF keys IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $3, lease_until = $4,
        attempts = i.attempts + 1, updated_at = $5
    WHERE i.gen = $1 AND i.key = ANY ($2)
    RETURNING i.*
    $sql$ USING q.gen, keys, p_owner, p_until, p_now;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- Retention's step from after a key: `prune_phase` (version 5) for the items with a key
-- above `p_after`, returning also the largest key it removed (NULL: none). The full step
-- reads the primary key from the queue's first key, over the entries of every item removed
-- since a held snapshot was taken (and of every version that the items it passes over left
-- behind), at every step of every retention pass: in the soak at 2,000 deliveries a second,
-- 23 of 40 looks at the server's active statements, about three minutes into a hold, found
-- retention's step running. The backend runs every step through this one: from the start
-- (`p_after` the smallest `bigint`) while it sees no such snapshot, and while it sees one,
-- from where its last step ended, with a step from the start once per its warning's
-- threshold (a minute by default). An item that reached the phase behind that key waits
-- for that.
CREATE FUNCTION {schema}.prune_after(
    p_queue text, p_phase text, p_before bigint, p_limit bigint, p_after bigint,
    OUT removed bigint, OUT last bigint
) LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    EXECUTE $sql$
    WITH head AS (
        SELECT key, updated_at FROM {schema}.items
        WHERE gen = $1 AND phase = $2 AND key > $5 ORDER BY key LIMIT $4
    ), old AS (
        SELECT key FROM head
        WHERE key < coalesce((SELECT min(key) FROM head WHERE updated_at > $3), 9223372036854775807)
    ), locked AS (
        SELECT key, phase FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM old))
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM locked WHERE phase = $2))
        RETURNING gen, key, phase
    ), uncounted AS (
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT gen, phase, {schema}.shard(), -count(*) FROM gone GROUP BY gen, phase
        ORDER BY gen, phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT count(*), max(key) FROM gone
    $sql$ INTO removed, last USING g, p_phase, p_before, p_limit, p_after;
END $$;

-- Version 5's step is now `prune_after` from the start, so that the schema holds one body
-- of it (the backend calls `prune_after` for every step).
CREATE OR REPLACE FUNCTION {schema}.prune_phase(p_queue text, p_phase text, p_before bigint, p_limit bigint)
RETURNS bigint LANGUAGE sql AS $$
    SELECT removed FROM {schema}.prune_after(p_queue, p_phase, p_before, p_limit,
                                             -9223372036854775807 - 1)
$$;
