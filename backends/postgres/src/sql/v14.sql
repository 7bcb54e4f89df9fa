-- hookspool schema, version 14: a batched ack finds its rows by address. Functions only: no
-- table changes.
--
-- An ack of a claim's items (`settle_leased_to`) looked each item up by key: one descent of
-- the primary key per item, through the entries of the item's older versions. That cost
-- the server 8.1k instructions per item more than reading the row at its address (in one
-- session, acks of 1024). Per item claimed and acked by 4 consumers
-- (`benches/scripts/pg_instructions.sh 8 4`): 122.3k with version 13, 115.8k with this.
--
-- - `claim_located` is `claim_for` (version 11, with version 13's lease rows) that also
--   returns each leased row's address (`ctid`, the place of the version the claim wrote).
--   The backend uses it for every claim from the head of the queue, one consumer's
--   included (one owner in the arrays), except a consumer alone asking for fewer than 64
--   items, which calls version 13's `claim` (see "Small claims" in the README: this
--   function costs about 130k instructions more per call).
-- - `settle_located` takes those addresses beside the keys. It finds each row at its
--   address, and writes it only if it is still that key's row of the queue's generation
--   leased to the owner: the same condition as `settle_leased_to`, which looks the row up
--   by key. An address whose version has since been replaced (an item released, claimed
--   again, its lease renewed) finds nothing: the server reads the version at that address
--   only if the statement's snapshot sees it, and a version replaced while the statement
--   waits for it is not taken either, since its newest version is at another address. An
--   address whose version was vacuumed away and whose place now holds another row fails
--   the key's check.
-- - The generation is compared as `(gen = $1) IS TRUE`, which no index can serve, so that
--   the addresses are the statement's only way to its rows. With `gen = $1`, the server
--   read the whole generation through the primary key when its statistics made the
--   generation look small (a queue made after the table was last analyzed); a test in
--   `tests/plans.rs` saw it.
-- - The keys an address did not settle (or that came without one) are then settled by key
--   (`settle_leased_to`), so the result is that of `settle_leased_to` alone.

-- The claim of `claim_for` (version 13), returning each row's address (`address`), and
-- without ordering the locked rows when they all go to one consumer.
CREATE FUNCTION {schema}.claim_located(
    p_queue text, p_owners text[], p_limits integer[], p_untils bigint[], p_now bigint,
    OUT who integer, OUT address tid, OUT key bigint, OUT attempts integer,
    OUT created_at bigint, OUT not_before bigint, OUT last_error text, OUT metadata json,
    OUT payload bytea
) RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    keys bigint[];
    total bigint;
    first integer := 1;
    share integer;
    lid bigint;
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
            'invalid input: claim_located takes owners, limits and lease ends as arrays of '
            'one length, without NULLs';
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
    -- Shares are cut from the rows in due order; a claim of one consumer needs no order
    -- (its caller sorts its items), and sorting 1024 rows to build the arrays cost the
    -- server 3.3k instructions per item claimed.
    EXECUTE format($sql$
    SELECT array_agg(ctid %1$s), array_agg(key %1$s)
    FROM (
        SELECT ctid, not_before, key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$, CASE WHEN cardinality(p_owners) > 1 THEN 'ORDER BY not_before, key' ELSE '' END)
    INTO rows, keys USING q.gen, p_now, total;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    FOR w IN 1 .. cardinality(p_owners) LOOP
        EXIT WHEN first > cardinality(rows);
        share := least(greatest(p_limits[w], 0), cardinality(rows) - first + 1);
        CONTINUE WHEN share = 0;
        lid := nextval('{schema}.lease_ids');
        RETURN QUERY EXECUTE $sql$
        UPDATE {schema}.items i
        SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
            attempts = i.attempts + 1, updated_at = $4, lease_id = $6
        WHERE i.ctid = ANY ((SELECT $1)::tid[])
        RETURNING $5, i.ctid, i.key, i.attempts, i.created_at, i.not_before, i.last_error,
                  i.metadata, i.payload
        $sql$ USING rows[first : first + share - 1], p_owners[w], p_untils[w], p_now, w, lid;
        GET DIAGNOSTICS leased = ROW_COUNT;
        IF leased > 0 THEN
            INSERT INTO {schema}.leases (id, gen, until, open, keys)
            VALUES (lid, q.gen, p_untils[w], leased, keys[first : first + share - 1]);
        END IF;
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

-- `settle_leased_to` (version 13) with each key's address from its claim (NULL: not known):
-- the rows still at their addresses are settled there, the rest by key. Returns the keys
-- settled, as `settle_leased_to` does (NULL: no such queue).
CREATE FUNCTION {schema}.settle_located(
    p_queue text, p_owner text, p_keys bigint[], p_addresses tid[], p_phase text,
    p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    applied bigint[];
    lids bigint[];
    moved bigint;
    missed bigint[];
BEGIN
    IF p_keys IS NULL OR p_addresses IS NULL
       OR cardinality(p_addresses) <> cardinality(p_keys) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
            'invalid input: settle_located takes keys and their addresses as arrays of one '
            'length';
    END IF;
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_phase IS NULL THEN
        EXECUTE $sql$
        WITH gone AS (
            DELETE FROM {schema}.items i
            USING unnest($3::bigint[], $4::tid[]) AS u(key, address)
            WHERE i.ctid = u.address AND (i.gen = $1) IS TRUE AND i.key = u.key
              AND i.lease_owner = $2
            RETURNING i.key, i.lease_id
        )
        SELECT coalesce(array_agg(key), '{}'), array_agg(lease_id) FROM gone
        $sql$ INTO applied, lids USING g, p_owner, p_keys, p_addresses;
    ELSE
        EXECUTE $sql$
        WITH moved AS (
            UPDATE {schema}.items i
            SET phase = $5, lease_owner = NULL, lease_until = NULL, updated_at = $6,
                not_before = CASE WHEN $5 = 'pending' THEN $6 ELSE i.not_before END,
                ttl_from = CASE WHEN $5 = 'pending' THEN i.created_at END
            FROM unnest($3::bigint[], $4::tid[]) AS u(key, address)
            WHERE i.ctid = u.address AND (i.gen = $1) IS TRUE AND i.key = u.key
              AND i.lease_owner = $2
            RETURNING i.key, i.lease_id
        )
        SELECT coalesce(array_agg(key), '{}'), array_agg(lease_id) FROM moved
        $sql$ INTO applied, lids USING g, p_owner, p_keys, p_addresses, p_phase, p_now;
    END IF;
    moved := cardinality(applied);
    IF moved > 0 THEN
        PERFORM {schema}.close_leases(lids);
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT g, d.phase, {schema}.shard(), sum(d.n)
        FROM (VALUES (p_phase, moved), ('in_flight', -moved)) AS d(phase, n)
        WHERE d.phase IS NOT NULL
        GROUP BY d.phase HAVING sum(d.n) <> 0 ORDER BY d.phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    IF moved < cardinality(p_keys) THEN
        missed := ARRAY(SELECT unnest(p_keys) EXCEPT SELECT unnest(applied));
        IF cardinality(missed) > 0 THEN
            applied := applied || {schema}.settle_leased_to(p_queue, p_owner, missed, p_phase, p_now);
        END IF;
    END IF;
    RETURN applied;
END $$;
