-- hookspool schema, version 5: a claim locks its rows first, then leases them.
--
-- Version 4's claim was one statement: `WITH due AS (SELECT … FOR UPDATE SKIP LOCKED)
-- UPDATE … FROM due`. The server runs it row by row: it locks one due row, writes its new
-- version, then locks the next. Claims running at once walk the same end of the due index
-- at the same pace, and keep meeting the rows another one has just locked: each such row is
-- read and tried before it is skipped. With 4 consumers claiming 1024 items each, the
-- statement took 47 ms where locking first and then updating took 34 ms (`pgbench`, 4
-- clients, 200,000 due items). Now the claim locks its rows in one statement (a few µs a
-- row), and leases them by key in a second: the others' scans pass over a block of rows
-- already locked instead of racing for each one. Nothing else changes: no table is touched.

CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
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
    PERFORM {schema}.sweep_gen(q, p_now);
    -- Planned at every call, as in version 4.
    EXECUTE $sql$
    SELECT array_agg(key) FROM (
        SELECT key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO keys USING q.gen, p_now, p_limit;
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
