-- hookspool schema, version 8: a claim leases the rows it locked by their physical
-- address (`ctid`), not by key; a batch of one owner's leases all moved to one phase (an
-- `ack_many`) is one plain `UPDATE` by key.
--
-- The claim. A claim locks its due rows in one statement and leases them in a second
-- (version 5). The second looked each locked row up again in the primary key
-- (`key = ANY (…)`): for a claim of 1024 items, 1024 descents of the index, 1.1 of the
-- 7 ms its `UPDATE` took in one session. The lock statement now returns each row's `ctid`,
-- and the lease `UPDATE` reads the rows at those addresses (a TID scan). A row locked
-- `FOR UPDATE` stays where it is until the transaction ends (nobody else may update or
-- delete it, and vacuum does not move rows), so the addresses hold, and each is that of a
-- version the lock statement found pending in the queue's generation (a row another
-- session changed meanwhile is locked at its newest version and checked again). The
-- `UPDATE` has no other condition: one on an indexed column would let a plan made from
-- statistics of when the queue was small read that index instead (`tests/plans.rs`). The
-- addresses reach the `UPDATE` through a sub-select, so that planning it (at every call,
-- as in version 4) does not weigh each one: 0.13 ms instead of 0.28 ms for 1024. Claim
-- 1024 + `ack_many` with 4 consumers, alternating builds: 83.0-87.4k rows/s before,
-- 87.6-91.2k after.
--
-- The batched ack. `settle_leased` (version 5) takes five arrays, one entry per item, and
-- joins them with the items. When every entry moves its item to the same phase and sets
-- nothing else (as `ack_many` does, under either retention), or every one removes it,
-- `settle_leased_to` does the same with the keys and one phase: no join, no per-entry
-- expressions. For 1024 acks in one session, 8.2-8.5 ms against 9.2-9.7 ms.

-- Leases the pending rows of generation `p_gen` at addresses `p_rows`, which the caller
-- has just locked `FOR UPDATE`, to `p_owner` until `p_until`, and counts them: the second
-- half of `claim` and `claim_after`.
CREATE FUNCTION {schema}.lease_rows(
    p_gen bigint, p_rows tid[], p_owner text, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    claimed bigint;
BEGIN
    -- Planned at every call (a plan kept from a small table would read it whole). The
    -- addresses come through a sub-select, so that planning does not weigh each of them.
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING p_rows, p_owner, p_until, p_now;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (p_gen, 'in_flight', {schema}.shard(), claimed),
               (p_gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    -- Planned at every call, as in version 4.
    EXECUTE $sql$
    SELECT array_agg(ctid) FROM (
        SELECT ctid FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows USING q.gen, p_now, p_limit;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM {schema}.lease_rows(q.gen, rows, p_owner, p_until, p_now);
END $$;

-- The claim from after a position (version 6), the same way.
CREATE OR REPLACE FUNCTION {schema}.claim_after(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint,
    p_after_not_before bigint, p_after_key bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    EXECUTE $sql$
    SELECT array_agg(ctid) FROM (
        SELECT ctid FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND (not_before, key) > ($4, $5)
          AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows USING q.gen, p_now, p_limit, p_after_not_before, p_after_key;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM {schema}.lease_rows(q.gen, rows, p_owner, p_until, p_now);
END $$;

-- A batch of one owner's leases (see `settle_leased` in version 5) that all go to phase
-- `p_phase` with nothing else set (NULL: every item removed). Moves as `settle_leased` does:
-- the lease goes, the error and metadata stay, and back in `pending` an item is due now and
-- its TTL counts from its creation. Returns the keys it applied (the caller works out why the
-- others were not), or NULL for a missing queue. Planned at every call, as the claim is.
CREATE FUNCTION {schema}.settle_leased_to(
    p_queue text, p_owner text, p_keys bigint[], p_phase text, p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    applied bigint[];
    moved bigint;
BEGIN
    IF p_keys IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
            'invalid input: settle_leased_to takes an array of keys';
    END IF;
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_phase IS NULL THEN
        EXECUTE $sql$
        WITH gone AS (
            DELETE FROM {schema}.items
            WHERE gen = $1 AND key = ANY ($3) AND lease_owner = $2
            RETURNING key
        )
        SELECT coalesce(array_agg(key), '{}') FROM gone
        $sql$ INTO applied USING g, p_owner, p_keys;
    ELSE
        EXECUTE $sql$
        WITH moved AS (
            UPDATE {schema}.items i
            SET phase = $4, lease_owner = NULL, lease_until = NULL, updated_at = $5,
                not_before = CASE WHEN $4 = 'pending' THEN $5 ELSE i.not_before END,
                ttl_from = CASE WHEN $4 = 'pending' THEN i.created_at END
            WHERE i.gen = $1 AND i.key = ANY ($3) AND i.lease_owner = $2
            RETURNING i.key
        )
        SELECT coalesce(array_agg(key), '{}') FROM moved
        $sql$ INTO applied USING g, p_owner, p_keys, p_phase, p_now;
    END IF;
    moved := cardinality(applied);
    IF moved > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT g, d.phase, {schema}.shard(), sum(d.n)
        FROM (VALUES (p_phase, moved), ('in_flight', -moved)) AS d(phase, n)
        WHERE d.phase IS NOT NULL
        GROUP BY d.phase HAVING sum(d.n) <> 0 ORDER BY d.phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN applied;
END $$;
