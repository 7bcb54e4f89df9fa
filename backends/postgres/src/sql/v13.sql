-- hookspool schema, version 13: a claim's leases are found through a row of their own, not
-- through an index of the items.
--
-- Up to version 12, every claimed item entered `items_leases` (`gen, lease_until`, in
-- flight), the sweep's way to the expired leases. A claim and its ack rewrite each item
-- twice, and each new version enters the primary key and the partial indexes it matches:
-- that entry was the one index entry of a claim that the plain lease protocol does not
-- write. Counted in the server's instructions per item claimed and acked (claims of 1024
-- by 4 consumers and their `ack_many`, `benches/scripts/pg_instructions.sh 8 4`), it was
-- 11.7k of the 130.0k (the plain protocol: 104.7k).
--
-- Now each claim writes one row to `leases`: its generation, its lease end, how many of its
-- items are still in flight as far as acks have said, and their keys. Each claimed item
-- names its row (`lease_id`), and a check keeps that true of every item in flight: a
-- process with older code whose claim was under way as this migration committed gets an
-- error from that claim, not an item in flight that no sweep would find (its next claim
-- runs these functions).
--
-- - Settles (`settle_leased_to`, `settle_leased` and the backend's general settle) count
--   the items they take out of flight off their rows (`close_leases`), and delete a row
--   whose count comes to 0. A pop, or a row another session holds at that moment, leaves
--   the count as it is; a reset leaves the rows to the trash.
-- - The sweep reads the rows whose lease end has passed (`leases_due`), deletes them, and
--   releases those of their items that are still in flight with an expired lease. A row
--   whose count was not taken to 0 costs the sweep a look-up of each of its keys, once.
-- - An item claimed again is in flight under its new row, whose lease end is the item's;
--   its old row, if still there, finds the item's lease live and leaves it be. So every
--   item in flight is in a row whose end is no later than its lease's, and the sweep that
--   deletes the row releases it when its lease has expired.
-- - Pages and pops of in-flight items read the keys of the generation's rows instead of
--   the index; they hold as many keys as there are items in flight, plus those the counts
--   have not yet taken out.
--
-- Upgrading: the items in flight are given rows, one per owner and lease end, and
-- `items_leases` is dropped last. Adding the column holds the table whole (readers wait
-- too) until the migration commits, so that lock is taken first: a weaker lock first, then
-- this one, could deadlock with a claim that has locked its rows and waits to write them.

LOCK TABLE {schema}.items IN ACCESS EXCLUSIVE MODE;

CREATE SEQUENCE {schema}.lease_ids;

CREATE TABLE {schema}.leases (
    id     bigint PRIMARY KEY,
    gen    bigint NOT NULL,
    -- The lease end of the claim (an item claimed again is also in the later claim's row,
    -- with that claim's end).
    until  bigint NOT NULL,
    -- Items of the claim not yet counted out of flight by an ack.
    open   integer NOT NULL,
    keys   bigint[] NOT NULL
) WITH (
    -- Every claim inserts a row and most acks delete one: vacuum often and without pausing.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);
-- The keys of a claim of 1024 take 8 kB: stored out of line, not compressed (they are
-- written once and read at most once).
ALTER TABLE {schema}.leases ALTER COLUMN keys SET STORAGE EXTERNAL;
CREATE INDEX leases_due ON {schema}.leases (gen, until);

ALTER TABLE {schema}.items ADD COLUMN lease_id bigint;

WITH flying AS (
    SELECT nextval('{schema}.lease_ids') AS id, gen, lease_until AS until,
           count(*)::integer AS open, array_agg(key ORDER BY key) AS keys
    FROM {schema}.items WHERE phase = 'in_flight'
    GROUP BY gen, lease_owner, lease_until
), made AS (
    INSERT INTO {schema}.leases (id, gen, until, open, keys)
    SELECT id, gen, until, open, keys FROM flying
    RETURNING id, gen, keys
)
UPDATE {schema}.items i SET lease_id = made.id
FROM made, unnest(made.keys) AS k(key)
WHERE i.gen = made.gen AND i.key = k.key;

-- Checked on every row written from now on; the rows in flight were given their lease just
-- above, and no other row needs one. `lease_id` first: a claim sets it and an ack keeps it,
-- so for those two writes of every item the check ends there, without comparing text.
ALTER TABLE {schema}.items ADD CONSTRAINT items_in_flight_have_a_lease_row
    CHECK (lease_id IS NOT NULL OR phase <> 'in_flight') NOT VALID;

-- Releases the expired leases of `q`'s generation (through their rows) and expires items
-- past the queue's TTL (as in version 4).
CREATE OR REPLACE FUNCTION {schema}.sweep_gen(q {schema}.queues, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
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
            SET phase = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = $2, updated_at = $2, ttl_from = i.created_at
            FROM expired WHERE i.gen = $1 AND i.key = expired.key
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

-- Counts `p_ids` (the lease rows of items just taken out of flight, one entry per item)
-- off their rows, and deletes the rows that have none left. A row another session holds
-- is left as it is, not waited for: a sweep deleting it may be waiting for one of this
-- transaction's items, and the count only saves the sweep work (the row stays until its
-- lease end, when the sweep deletes it and finds its items out of flight).
CREATE FUNCTION {schema}.close_leases(p_ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lid bigint;
    n bigint;
    left_open integer;
BEGIN
    FOR lid, n IN
        SELECT x, count(*) FROM unnest(p_ids) AS x WHERE x IS NOT NULL GROUP BY x ORDER BY x
    LOOP
        UPDATE {schema}.leases SET open = open - n
        WHERE id = (SELECT id FROM {schema}.leases WHERE id = lid FOR UPDATE SKIP LOCKED)
        RETURNING open INTO left_open;
        IF FOUND AND left_open <= 0 THEN
            DELETE FROM {schema}.leases WHERE id = lid;
        END IF;
    END LOOP;
END $$;

-- The claim (as in version 10): the lock statement also returns the keys, and the leased
-- rows name the claim's lease row.
CREATE OR REPLACE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    rows tid[];
    keys bigint[];
    lid bigint;
    claimed bigint;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    EXECUTE $sql$
    SELECT array_agg(ctid), array_agg(key) FROM (
        SELECT ctid, key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, p_limit;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    lid := nextval('{schema}.lease_ids');
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
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

-- The claim from after a position (version 10), the same way.
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
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    EXECUTE $sql$
    SELECT array_agg(ctid), array_agg(key) FROM (
        SELECT ctid, key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND (not_before, key) > ($4, $5)
          AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, p_limit, p_after_not_before, p_after_key;
    IF rows IS NULL THEN
        RETURN;
    END IF;
    lid := nextval('{schema}.lease_ids');
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
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

-- One claim for several consumers (version 11): a lease row for each consumer's share.
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
    EXECUTE $sql$
    SELECT array_agg(ctid ORDER BY not_before, key), array_agg(key ORDER BY not_before, key)
    FROM (
        SELECT ctid, not_before, key FROM {schema}.items
        WHERE gen = $1 AND phase = 'pending' AND not_before <= $2
        ORDER BY not_before, key
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    $sql$ INTO rows, keys USING q.gen, p_now, total;
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

-- Version 8's second half of a claim, still called by a claim of that version's code that
-- was under way when version 10 committed: kept working, with a lease row.
CREATE OR REPLACE FUNCTION {schema}.lease_rows(
    p_gen bigint, p_rows tid[], p_owner text, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    keys bigint[];
    lid bigint;
    claimed bigint;
BEGIN
    EXECUTE $sql$
    SELECT array_agg(key) FROM {schema}.items WHERE ctid = ANY ((SELECT $1)::tid[])
    $sql$ INTO keys USING p_rows;
    lid := nextval('{schema}.lease_ids');
    RETURN QUERY EXECUTE $sql$
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = $2, lease_until = $3,
        attempts = i.attempts + 1, updated_at = $4, lease_id = $5
    WHERE i.ctid = ANY ((SELECT $1)::tid[])
    RETURNING i.*
    $sql$ USING p_rows, p_owner, p_until, p_now, lid;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.leases (id, gen, until, open, keys)
        VALUES (lid, p_gen, p_until, claimed, keys);
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (p_gen, 'in_flight', {schema}.shard(), claimed),
               (p_gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- The batched ack (version 10), counting its items off their lease rows.
CREATE OR REPLACE FUNCTION {schema}.settle_leased_to(
    p_queue text, p_owner text, p_keys bigint[], p_phase text, p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    applied bigint[];
    lids bigint[];
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
            RETURNING key, lease_id
        )
        SELECT coalesce(array_agg(key), '{}'), array_agg(lease_id) FROM gone
        $sql$ INTO applied, lids USING g, p_owner, p_keys;
    ELSE
        -- `lease_id` is not set here, so the row's value is the lease's.
        EXECUTE $sql$
        WITH moved AS (
            UPDATE {schema}.items i
            SET phase = $4, lease_owner = NULL, lease_until = NULL, updated_at = $5,
                not_before = CASE WHEN $4 = 'pending' THEN $5 ELSE i.not_before END,
                ttl_from = CASE WHEN $4 = 'pending' THEN i.created_at END
            WHERE i.gen = $1 AND i.key = ANY ((SELECT $3)::bigint[]) AND i.lease_owner = $2
            RETURNING i.key, i.lease_id
        )
        SELECT coalesce(array_agg(key), '{}'), array_agg(lease_id) FROM moved
        $sql$ INTO applied, lids USING g, p_owner, p_keys, p_phase, p_now;
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
    RETURN applied;
END $$;

-- A batch of one owner's settles (version 5), counting its items off their lease rows.
CREATE OR REPLACE FUNCTION {schema}.settle_leased(
    p_queue text, p_owner text, p_keys bigint[], p_phases text[], p_not_before bigint[],
    p_errors text[], p_metadata json[], p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    applied bigint[];
    lids bigint[];
BEGIN
    IF p_keys IS NULL OR p_phases IS NULL OR p_not_before IS NULL OR p_errors IS NULL
       OR p_metadata IS NULL
       OR cardinality(p_phases) <> cardinality(p_keys)
       OR cardinality(p_not_before) <> cardinality(p_keys)
       OR cardinality(p_errors) <> cardinality(p_keys)
       OR cardinality(p_metadata) <> cardinality(p_keys) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
            'invalid input: settle_leased takes five arrays of one length';
    END IF;
    SELECT gen INTO g FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE $sql$
    WITH moved AS (
        UPDATE {schema}.items i
        SET phase = u.phase, lease_owner = NULL, lease_until = NULL, updated_at = $8,
            not_before = CASE WHEN u.phase = 'pending' THEN coalesce(u.not_before, $8)
                              ELSE i.not_before END,
            last_error = coalesce(u.error, i.last_error),
            metadata = coalesce(u.metadata, i.metadata),
            ttl_from = CASE WHEN u.phase = 'pending' THEN i.created_at END
        FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::json[])
            AS u(key, phase, not_before, error, metadata)
        WHERE i.gen = $1 AND i.key = u.key AND u.phase IS NOT NULL AND i.lease_owner = $2
        RETURNING i.key, i.phase, i.lease_id
    ), removed AS (
        DELETE FROM {schema}.items i USING unnest($3::bigint[], $4::text[]) AS u(key, phase)
        WHERE i.gen = $1 AND i.key = u.key AND u.phase IS NULL AND i.lease_owner = $2
        RETURNING i.key, i.lease_id
    ), counted AS (
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT $1, d.phase, {schema}.shard(), sum(d.n)
        FROM (SELECT phase, 1 AS n FROM moved
              UNION ALL SELECT 'in_flight', -1 FROM moved
              UNION ALL SELECT 'in_flight', -1 FROM removed) AS d
        GROUP BY d.phase HAVING sum(d.n) <> 0 ORDER BY d.phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT coalesce(array_agg(key), '{}'), array_agg(lease_id)
    FROM (SELECT key, lease_id FROM moved UNION ALL SELECT key, lease_id FROM removed) AS done
    $sql$ INTO applied, lids
    USING g, p_owner, p_keys, p_phases, p_not_before, p_errors, p_metadata, p_now;
    IF cardinality(applied) > 0 THEN
        PERFORM {schema}.close_leases(lids);
    END IF;
    RETURN applied;
END $$;

-- Removes a page (version 4); a page of items in flight looks their keys up in the lease
-- rows of the generation.
CREATE OR REPLACE FUNCTION {schema}.pop_page(
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
        WHERE gen = $1 AND key %1$s $2 AND ($5::text IS NULL OR phase = $5) %3$s
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
    $sql$, CASE WHEN p_reverse THEN '<' ELSE '>' END, CASE WHEN p_reverse THEN 'DESC' ELSE 'ASC' END,
    CASE WHEN p_phase = 'in_flight' THEN
        $in$AND key = ANY (ARRAY(SELECT unnest(keys) FROM {schema}.leases WHERE gen = $1))$in$
    ELSE '' END)
    USING g, coalesce(p_after, CASE WHEN p_reverse THEN 9223372036854775807 ELSE 0 END),
          p_offset, p_limit, p_phase;
END $$;

-- As in version 7; a forgotten generation's lease rows go with its counter rows.
CREATE OR REPLACE FUNCTION {schema}.empty_trash(p_gen bigint, p_limit integer, p_grace_ms bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
    doomed_seq regclass;
BEGIN
    WITH doomed AS (
        SELECT key FROM {schema}.items WHERE gen = p_gen ORDER BY key LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.items i USING doomed WHERE i.gen = p_gen AND i.key = doomed.key
        RETURNING 1
    ) SELECT count(*) INTO deleted FROM gone;
    IF deleted = 0 AND NOT EXISTS (SELECT 1 FROM {schema}.items WHERE gen = p_gen) THEN
        DELETE FROM {schema}.trash
        WHERE gen = p_gen AND since <= now() - make_interval(secs => p_grace_ms / 1000.0)
        RETURNING key_seq INTO doomed_seq;
        IF FOUND THEN
            DELETE FROM {schema}.counts WHERE gen = p_gen;
            DELETE FROM {schema}.count_changes WHERE gen = p_gen;
            DELETE FROM {schema}.leases WHERE gen = p_gen;
            IF doomed_seq IS NOT NULL THEN
                EXECUTE format('DROP SEQUENCE IF EXISTS %s', doomed_seq);
            END IF;
        END IF;
    END IF;
    RETURN deleted;
END $$;

DROP INDEX {schema}.items_leases;
