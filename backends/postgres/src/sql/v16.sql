-- hookspool schema, version 16: the claims and the TTL sweep read the index made for them
-- whatever the table's statistics say. Functions only: no table changes.
--
-- The statistics of a queue's table are a sample taken at one moment (by autovacuum's
-- `ANALYZE`, after a tenth of the table has changed), and a queue's share of pending items
-- swings far from it: a table analyzed while its queues were drained holds statistics that
-- say no item is pending, and a burst of pushes smaller than a tenth of the table (all the
-- items kept as `done`, say) leaves them so. A table never analyzed (a new schema filled
-- before autovacuum's first look) is no better. The planner then expects one pending item,
-- and two plans cost it nearly the same for a claim: `items_due`, which holds the due items
-- in claim order, or `items_pending` (by key) followed by a sort; small differences (such as
-- the depths of the two indexes) decide. It chose the second one from about 50,000 pending
-- items on: with 60,000 items pushed after the table was analyzed with none pending, a
-- claim of 16 read all 60,000 and sorted them on disk (`EXPLAIN ANALYZE`: "external
-- merge"), at every call, until the next `ANALYZE`. The TTL sweep likewise read every
-- pending item through `items_pending` to find the few past their TTL, instead of the head
-- of `items_ttl`.
--
-- Only `items_due` gives the due items in claim order without a sort, and only `items_ttl`
-- gives pending items by age. So the claims read their due items, and the sweep the oldest
-- item and the expired ones (now in age order), with sorting turned off
-- (`set_config('enable_sort', 'off', true)`, put back to what it was right after the one
-- statement): the planner then takes the index whatever it expects. Turning sorting off
-- changes what a plan costs, never what a statement returns; a statement that must sort
-- still can. It is not turned off around anything else: the sweep's release of expired
-- leases, for one, sorts the keys it looked up, and without a sort it would read the whole
-- queue in key order instead.
--
-- Cost: three settings per claim, 2.7k server instructions, against 2.0 million for a claim
-- of 16 (see the README's "Claims whatever the statistics say").

-- The sweep (version 15): its TTL part reads `items_ttl` alone. The oldest pending item of
-- a queue with a TTL is read first (one entry), and the expired ones only if it is past
-- its TTL.
CREATE OR REPLACE FUNCTION {schema}.sweep_gen(q {schema}.queues, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
DECLARE
    oldest bigint;
    sorting text;
    unused text;
BEGIN
    released := 0;
    IF EXISTS (SELECT 1 FROM {schema}.leases WHERE gen = q.gen AND until <= p_now) THEN
        -- The items are locked in key order, waiting for those an ack holds: a row is
        -- deleted here, so its items must not be skipped.
        EXECUTE $sql$
        WITH due AS (
            DELETE FROM {schema}.leases
            WHERE id IN (SELECT id FROM {schema}.leases WHERE gen = $1 AND until <= $2
                         FOR UPDATE SKIP LOCKED)
            RETURNING keys
        ), expired AS (
            SELECT key FROM {schema}.items
            WHERE gen = $1 AND key = ANY (ARRAY(SELECT unnest(keys) FROM due))
              AND phase = 'in_flight' AND lease_until <= $2
            ORDER BY key
            FOR UPDATE
        ), done AS (
            UPDATE {schema}.items i
            SET phase = 'pending', listed = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = $2, updated_at = $2, ttl_from = i.created_at
            FROM expired WHERE i.gen = $1 AND i.key = expired.key
            RETURNING 1
        ) SELECT count(*) FROM done
        $sql$ INTO released USING q.gen, p_now;
    END IF;
    expired := 0;
    IF q.ttl_ms IS NOT NULL AND (p_now = 9223372036854775807 OR p_now >= q.ttl_ms) THEN
        sorting := current_setting('enable_sort');
        unused := set_config('enable_sort', 'off', true);
        SELECT ttl_from INTO oldest FROM {schema}.items
        WHERE gen = q.gen AND listed = 'pending' AND ttl_from IS NOT NULL
        ORDER BY ttl_from LIMIT 1;
        IF oldest IS NOT NULL AND (p_now = 9223372036854775807 OR oldest <= p_now - q.ttl_ms) THEN
            EXECUTE $sql$
            WITH old AS (
                SELECT key FROM {schema}.items
                WHERE gen = $1 AND listed = 'pending' AND ttl_from IS NOT NULL
                  AND ($2 = 9223372036854775807 OR ttl_from <= $2 - $3)
                ORDER BY ttl_from
                FOR UPDATE SKIP LOCKED
            ), done AS (
                UPDATE {schema}.items i SET phase = 'expired', listed = 'expired', updated_at = $2
                FROM old WHERE i.gen = $1 AND i.key = old.key
                RETURNING 1
            ) SELECT count(*) FROM done
            $sql$ INTO expired USING q.gen, p_now, q.ttl_ms;
        END IF;
        unused := set_config('enable_sort', sorting, true);
    END IF;
    IF released + expired > 0 THEN
        PERFORM {schema}.add_counts(q.gen, ARRAY['in_flight', 'pending', 'pending', 'expired'],
            ARRAY[-released, released, -expired, expired]);
    END IF;
END $$;

-- The claim (version 15), its due items read with sorting turned off: through `items_due`.
CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    keys bigint[];
    lid bigint;
    claimed bigint;
    sorting text := current_setting('enable_sort');
    unused text;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    unused := set_config('enable_sort', 'off', true);
    EXECUTE $sql$
    SELECT array_agg(ctid), array_agg(key) FROM (
        SELECT ctid, key FROM {schema}.items
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, p_limit;
    unused := set_config('enable_sort', sorting, true);
    IF rows IS NULL THEN
        RETURN;
    END IF;
    lid := nextval('{schema}.lease_ids');
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', listed = NULL, ttl_from = NULL, lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4, lease_id = $5
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING rows, p_owner, p_until, p_now, lid;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.leases (id, gen, until, open, keys)
        VALUES (lid, q.gen, p_until, claimed, keys);
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- The claim from after a position (version 15), the same way.
CREATE OR REPLACE FUNCTION {schema}.claim_after(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint,
    p_after_not_before bigint, p_after_key bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    keys bigint[];
    lid bigint;
    claimed bigint;
    sorting text := current_setting('enable_sort');
    unused text;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    unused := set_config('enable_sort', 'off', true);
    EXECUTE $sql$
    SELECT array_agg(ctid), array_agg(key) FROM (
        SELECT ctid, key FROM {schema}.items
        WHERE gen = $1 AND listed = 'pending' AND (not_before, key) > ($4, $5)
          AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, p_limit, p_after_not_before, p_after_key;
    unused := set_config('enable_sort', sorting, true);
    IF rows IS NULL THEN
        RETURN;
    END IF;
    lid := nextval('{schema}.lease_ids');
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', listed = NULL, ttl_from = NULL, lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4, lease_id = $5
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING rows, p_owner, p_until, p_now, lid;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.leases (id, gen, until, open, keys)
        VALUES (lid, q.gen, p_until, claimed, keys);
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- One claim for several consumers (version 15), the same way.
CREATE OR REPLACE FUNCTION {schema}.claim_for(
    p_queue text, p_owners text[], p_limits integer[], p_untils bigint[], p_now bigint,
    OUT who integer, OUT key bigint, OUT attempts integer, OUT created_at bigint,
    OUT not_before bigint, OUT last_error text, OUT metadata json, OUT payload bytea
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
    sorting text := current_setting('enable_sort');
    unused text;
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
    unused := set_config('enable_sort', 'off', true);
    EXECUTE $sql$
    SELECT array_agg(ctid ORDER BY not_before, key), array_agg(key ORDER BY not_before, key)
    FROM (
        SELECT ctid, not_before, key FROM {schema}.items
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, total;
    unused := set_config('enable_sort', sorting, true);
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
        SET phase = 'in_flight', listed = NULL, ttl_from = NULL, lease_owner = $2, lease_until = $3,
            attempts = i.attempts + 1, updated_at = $4, lease_id = $6
        WHERE i.ctid = ANY ((SELECT $1)::tid[])
        RETURNING $5, i.key, i.attempts, i.created_at, i.not_before, i.last_error,
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

-- One claim for several consumers that also returns its rows' addresses (version 15), the
-- same way.
CREATE OR REPLACE FUNCTION {schema}.claim_located(
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
    sorting text := current_setting('enable_sort');
    unused text;
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
    unused := set_config('enable_sort', 'off', true);
    EXECUTE format($sql$
    SELECT array_agg(ctid %1$s), array_agg(key %1$s)
    FROM (
        SELECT ctid, not_before, key FROM {schema}.items
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$, CASE WHEN cardinality(p_owners) > 1 THEN 'ORDER BY not_before, key' ELSE '' END)
    INTO rows, keys USING q.gen, p_now, total;
    unused := set_config('enable_sort', sorting, true);
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
        SET phase = 'in_flight', listed = NULL, ttl_from = NULL, lease_owner = $2, lease_until = $3,
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
