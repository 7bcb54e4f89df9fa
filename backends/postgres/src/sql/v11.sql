-- hookspool schema, version 11: one claim for several consumers of one process. Functions
-- only: no table changes.
--
-- Consumers of one queue that claim at the same time each start at the head of the due
-- index, and each steps over the rows the others hold locked and over the entries of the
-- rows they have just claimed. Counted in the server's instructions per item claimed and
-- acked (`benches/scripts/pg_instructions.sh`), four consumers cost 11-14% more than
-- one. A process now sends the claims of a queue that its consumers make while two of its
-- claims run as one call of `claim_for`: it locks the due rows for all of them at once,
-- in `(not_before, key)` order, and leases each consumer its share (the first consumer the
-- first rows) with its own owner and lease end. One sweep, one count, one commit.
--
-- `who` in each returned row is the consumer's place in the arrays (from 1). A consumer's
-- share is its limit, or what is left; a consumer gets nothing once the due rows run out.
-- The arrays must have the same length, at least 1, and no NULL owner, limit or end.

CREATE FUNCTION {schema}.claim_for(
    p_queue text, p_owners text[], p_limits integer[], p_untils bigint[], p_now bigint,
    OUT who integer, OUT key bigint, OUT attempts integer, OUT created_at bigint,
    OUT not_before bigint, OUT last_error text, OUT metadata json, OUT payload bytea
) RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    total bigint;
    first integer := 1;
    share integer;
    leased bigint;
    claimed bigint := 0;
BEGIN
    IF p_owners IS NULL OR p_limits IS NULL OR p_untils IS NULL
       OR cardinality(p_owners) = 0
       OR cardinality(p_limits) <> cardinality(p_owners)
       OR cardinality(p_untils) <> cardinality(p_owners)
       OR array_position(p_owners, NULL) IS NOT NULL
       OR array_position(p_limits, NULL) IS NOT NULL
       OR array_position(p_untils, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
            'invalid input: claim_for takes owners, limits and lease ends as arrays of one '
            'length, without NULLs';
    END IF;
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    SELECT sum(greatest(l, 0)) INTO total FROM unnest(p_limits) AS l;
    IF total = 0 THEN
        RETURN;
    END IF;
    -- As in `claim`, planned at every call; the addresses in claim order, so that each
    -- consumer's share is a slice.
    EXECUTE $sql$
    SELECT array_agg(ctid ORDER BY not_before, key) FROM (
        SELECT ctid, not_before, key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows USING q.gen, p_now, total;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    FOR w IN 1 .. cardinality(p_owners) LOOP
        EXIT WHEN first > cardinality(rows);
        share := least(greatest(p_limits[w], 0), cardinality(rows) - first + 1);
        CONTINUE WHEN share = 0;
        RETURN QUERY EXECUTE $sql$
        UPDATE {schema}.items i
        SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
            attempts = i.attempts + 1, updated_at = $4
        WHERE i.ctid = ANY ((SELECT $1)::tid[])
        RETURNING $5, i.key, i.attempts, i.created_at, i.not_before, i.last_error,
                  i.metadata, i.payload
        $sql$ USING rows[first : first + share - 1], p_owners[w], p_untils[w], p_now, w;
        GET DIAGNOSTICS leased = ROW_COUNT;
        claimed := claimed + leased;
        first := first + share;
    END LOOP;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;
