-- hookspool schema, version 10: a claim leases its rows in its own body, and a batch of one
-- owner's acks hands its keys to the planner as one value. Functions only: no table changes.
--
-- The claim. Since version 8, `claim` and `claim_after` returned the rows that `lease_rows`
-- returned: the leased rows were stored twice on their way out (a set-returning function
-- keeps its whole result before the caller reads it: once in `lease_rows`, once more in the
-- claim), and every call entered one more function. The claims now run the lease `UPDATE`
-- themselves. `lease_rows` stays, unused by this code: a claim that started in the body of
-- version 8 while this migration commits still calls it.
--
-- The batched ack. `settle_leased_to` planned its statement at every call with the keys as
-- a constant array, and the planner weighed each key to estimate the rows (for 1024 keys,
-- 0.29 ms of planning in one session, against 0.09 ms with the keys as one value). The keys
-- now reach the statement through a sub-select, as the claim's row addresses do since
-- version 8. The plan is the same: the primary key, looked up for each key.
--
-- Together: the server's instructions per item claimed and acked (claims of 1024 and their
-- `ack_many`, `benches/scripts/pg_instructions.sh`, 3 runs each) went from
-- 124.1-126.5k to 120.7-121.5k, planning from 4.4k to 1.9k of them.
--
-- A process with older code calls these functions by the same names and arguments, and gets
-- the same results. Claims and claims from a position lease their rows the same way, each
-- in its own body: a shared function is what cost the extra copy.

CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    claimed bigint;
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
    -- The rows at the addresses just locked (see version 8).
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING rows, p_owner, p_until, p_now;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- The claim from after a position (version 6), the same way.
CREATE OR REPLACE FUNCTION {schema}.claim_after(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint,
    p_after_not_before bigint, p_after_key bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    claimed bigint;
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
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING rows, p_owner, p_until, p_now;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- As in version 8, with the keys through a sub-select.
CREATE OR REPLACE FUNCTION {schema}.settle_leased_to(
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
            WHERE gen = $1 AND key = ANY ((SELECT $3)::bigint[]) AND lease_owner = $2
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
            WHERE i.gen = $1 AND i.key = ANY ((SELECT $3)::bigint[]) AND i.lease_owner = $2
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
