-- hookspool schema, version 4: the statements that find the rows a claim, a sweep, a pop of
-- a page or a prune changes are planned at every call.
--
-- The server keeps a generic plan for a function's statement once it has chosen one, and it
-- chooses it from the table sizes it sees then. A plan made while a queue held a few items
-- (every new schema, and a queue its retention had emptied) found the claimed rows by their
-- generation alone, through `items_by_phase`. Once the queue held thousands, each claimed
-- item read every row of its generation: a claim of 15 took 70 ms, and a daemon delivered a
-- few hundred a second instead of thousands, until autovacuum's next ANALYZE (up to a minute
-- later) made the server plan again. The more often one session ran the claim, the likelier
-- it was (a pool handing out the connection used last made it happen in one run in five).
--
-- These statements now run through EXECUTE, which plans them with the sizes and values of
-- the moment; the claim's was planned at every call anyway once its table had been analyzed
-- (about 0.1 ms), since its generic plan then costs more than a custom one. The function's
-- other statements (the queue's row, the checks of the lease and TTL indexes, the counters)
-- have one sensible plan and keep theirs. A pop of a page and retention's prune had the same
-- flaw as statements the backend prepared: they become the functions `pop_page` and
-- `prune_phase`, which do the same. Nothing else changes: no table is touched.

CREATE OR REPLACE FUNCTION {schema}.sweep_gen(q {schema}.queues, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- Each update runs only when a read of its index finds work: starting an UPDATE costs
    -- a claim more than the read, and there is usually nothing to do.
    released := 0;
    IF EXISTS (SELECT 1 FROM {schema}.items
               WHERE gen = q.gen AND phase = 'in_flight' AND lease_until <= p_now) THEN
        EXECUTE $sql$
        WITH due AS (
            SELECT key FROM {schema}.items
            WHERE gen = $1 AND phase = 'in_flight' AND lease_until <= $2
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i
            SET phase = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = $2, updated_at = $2, ttl_from = i.created_at
            FROM due WHERE i.gen = $1 AND i.key = due.key
            RETURNING 1
        ) SELECT count(*) FROM done
        $sql$ INTO released USING q.gen, p_now;
    END IF;
    expired := 0;
    IF q.ttl_ms IS NOT NULL AND (p_now = 9223372036854775807 OR p_now >= q.ttl_ms)
       AND EXISTS (SELECT 1 FROM {schema}.items
                   WHERE gen = q.gen AND phase = 'pending' AND ttl_from IS NOT NULL
                     AND (p_now = 9223372036854775807 OR ttl_from <= p_now - q.ttl_ms)) THEN
        EXECUTE $sql$
        WITH old AS (
            SELECT key FROM {schema}.items
            WHERE gen = $1 AND phase = 'pending' AND ttl_from IS NOT NULL
              AND ($2 = 9223372036854775807 OR ttl_from <= $2 - $3)
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i SET phase = 'expired', updated_at = $2
            FROM old WHERE i.gen = $1 AND i.key = old.key
            RETURNING 1
        ) SELECT count(*) FROM done
        $sql$ INTO expired USING q.gen, p_now, q.ttl_ms;
    END IF;
    IF released + expired > 0 THEN
        PERFORM {schema}.add_counts(q.gen, ARRAY['in_flight', 'pending', 'pending', 'expired'],
            ARRAY[-released, released, -expired, expired]);
    END IF;
END $$;

-- Sweeps, then leases up to `p_limit` due pending items in (not_before, key) order. Rows
-- other sessions are claiming are skipped, never waited for.
CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    claimed bigint;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    RETURN QUERY EXECUTE $sql$
    WITH due AS (
        SELECT key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $4, lease_until = $5,
        attempts = i.attempts + 1, updated_at = $2
    FROM due WHERE i.gen = $1 AND i.key = due.key
    RETURNING i.*
    $sql$ USING q.gen, p_now, p_limit, p_owner, p_until;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- Removes and returns a page of queue `p_queue`'s items in key order (newest first with
-- `p_reverse`): after key `p_after` (NULL: from the start), skipping `p_offset`, at most
-- `p_limit`, only phase `p_phase` if given. Rows other sessions are popping are skipped,
-- never waited for. Returns nothing for a missing queue.
CREATE FUNCTION {schema}.pop_page(
    p_queue text, p_after bigint, p_offset bigint, p_limit bigint, p_reverse boolean, p_phase text
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($sql$
    WITH doomed AS (
        SELECT key FROM {schema}.items
        WHERE gen = $1 AND key %1$s $2 AND ($5::text IS NULL OR phase = $5)
        ORDER BY key %2$s OFFSET $3 LIMIT $4
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.items i USING doomed
        WHERE i.gen = $1 AND i.key = doomed.key
        RETURNING i.*
    ), uncounted AS (
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT gen, phase, {schema}.shard(), -count(*) FROM gone GROUP BY gen, phase
        ORDER BY gen, phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT * FROM gone
    $sql$, CASE WHEN p_reverse THEN '<' ELSE '>' END, CASE WHEN p_reverse THEN 'DESC' ELSE 'ASC' END)
    USING g, coalesce(p_after, CASE WHEN p_reverse THEN 9223372036854775807 ELSE 0 END),
          p_offset, p_limit, p_phase;
END $$;

-- Retention's step: removes the items of queue `p_queue` in phase `p_phase` that got there
-- at `p_before` or earlier, taking the phase's first `p_limit` in key order and stopping at
-- the first younger one (as `Backend::prune` says). It walks the `items_by_phase` index and
-- reads no payload. Rows another session holds are skipped, and the phase is checked again
-- as each row is locked, so an item moved out of the phase meanwhile stays. Returns how many
-- it removed, or NULL for a missing queue.
CREATE FUNCTION {schema}.prune_phase(p_queue text, p_phase text, p_before bigint, p_limit bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    removed bigint;
BEGIN
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE $sql$
    WITH head AS (
        SELECT key, updated_at FROM {schema}.items
        WHERE gen = $1 AND phase = $2 ORDER BY key LIMIT $4
    ), old AS (
        SELECT key FROM head
        WHERE key < coalesce((SELECT min(key) FROM head WHERE updated_at > $3), 9223372036854775807)
    ), doomed AS (
        SELECT key FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM old)) AND phase = $2
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM doomed)) AND phase = $2
        RETURNING gen, phase
    ), uncounted AS (
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT gen, phase, {schema}.shard(), -count(*) FROM gone GROUP BY gen, phase
        ORDER BY gen, phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT count(*) FROM gone
    $sql$ INTO removed USING g, p_phase, p_before, p_limit;
    RETURN removed;
END $$;
