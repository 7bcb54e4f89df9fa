-- hookspool schema, version 15: no index of the items names `phase`, so that an ack (in
-- flight to done) writes its row's new version in place, without an index entry (a
-- "heap-only tuple", HOT).
--
-- PostgreSQL writes an update as HOT when no column that an index names (as a key or in its
-- predicate) changes and the row's page has room. Up to version 14 every partial index of
-- the items named `phase` in its predicate, so every change of phase wrote a new entry in the
-- primary key and in each index whose predicate the new version met: a claim and its ack
-- cost two primary-key entries per item, against one in the plain lease protocol. Now the
-- indexes name `listed` instead: the phase as the indexes list it, NULL for the phases they
-- leave out (`in_flight` and `done`). A claim still changes it ('pending' to NULL), so the
-- claim's versions enter the primary key; an ack leaves it NULL and changes no other indexed
-- column (a claim now clears `ttl_from`, which the ack cleared before), so with room on the
-- page its version is HOT. The room comes from the table's `fillfactor` (80 since version
-- 1) and from the versions the server prunes; a lower `fillfactor` was measured and not
-- kept (see the README's "Acks in place").
--
-- A check keeps `listed` true to `phase` on every row written: a statement that changed a
-- phase without it would be refused, not leave an item out of the index that claims read.
-- `listed` defaults to 'pending', so a push, which always writes a pending item, need not
-- name it (and a push of older code stays right). Every function that changes a phase or
-- reads a phase through an index is redefined below with `listed`; so are the backend's own
-- statements that do.
--
-- Upgrading: as in version 13 the table is held whole (readers wait too) until the
-- migration commits. Only the rows whose phase the indexes list (pending ones, and the
-- phases other than `in_flight` and `done`) are rewritten; the check reads every row once;
-- the four indexes are built under names of their own and the old ones dropped last. Items
-- already in flight keep their `ttl_from`, so their acks may write a new version as before.

LOCK TABLE {schema}.items IN ACCESS EXCLUSIVE MODE;

ALTER TABLE {schema}.items ADD COLUMN listed text COLLATE "C";
UPDATE {schema}.items SET listed = phase WHERE phase NOT IN ('in_flight', 'done');
ALTER TABLE {schema}.items ALTER COLUMN listed SET DEFAULT 'pending';

-- `IS NOT DISTINCT FROM`, not `=`: a check passes when its condition is NULL.
ALTER TABLE {schema}.items ADD CONSTRAINT items_listed_by_phase
    CHECK (CASE WHEN phase IN ('in_flight', 'done') THEN listed IS NULL
                ELSE listed IS NOT DISTINCT FROM phase END);

-- Claims: due pending items in (not_before, key) order.
CREATE INDEX items_due_v15 ON {schema}.items (gen, not_before, key) WHERE listed = 'pending';
-- Pages of pending items by key.
CREATE INDEX items_pending_v15 ON {schema}.items (gen, key) WHERE listed = 'pending';
-- The TTL sweep: pending items of queues with a TTL, by age.
CREATE INDEX items_ttl_v15 ON {schema}.items (gen, ttl_from)
    WHERE listed = 'pending' AND ttl_from IS NOT NULL;
-- Pages of the other listed phases (`dead`, `expired`, `corrupt`, an application's own), by
-- key. A statement that a kept plan may run for any of them names `listed <> 'pending'` too.
CREATE INDEX items_by_phase_v15 ON {schema}.items (gen, listed, key) WHERE listed <> 'pending';
DROP INDEX {schema}.items_due;
DROP INDEX {schema}.items_pending;
DROP INDEX {schema}.items_ttl;
DROP INDEX {schema}.items_by_phase;
ALTER INDEX {schema}.items_due_v15 RENAME TO items_due;
ALTER INDEX {schema}.items_pending_v15 RENAME TO items_pending;
ALTER INDEX {schema}.items_ttl_v15 RENAME TO items_ttl;
ALTER INDEX {schema}.items_by_phase_v15 RENAME TO items_by_phase;

-- The functions below are those of versions 3 to 14 (the version named in each comment)
-- with `listed` written wherever `phase` is, and read wherever an index is meant to be used.

-- The sweep (version 13): released items are listed as pending again, expired ones as
-- `expired`; the TTL's items are found through `listed`.
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
            SET phase = 'pending', listed = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = $2, updated_at = $2, ttl_from = i.created_at
            FROM expired WHERE i.gen = $1 AND i.key = expired.key
            RETURNING 1
        ) SELECT count(*) FROM done
        $sql$ INTO released USING q.gen, p_now;
    END IF;
    expired := 0;
    IF q.ttl_ms IS NOT NULL AND (p_now = 9223372036854775807 OR p_now >= q.ttl_ms)
       AND EXISTS (SELECT 1 FROM {schema}.items
                   WHERE gen = q.gen AND listed = 'pending' AND ttl_from IS NOT NULL
                     AND (p_now = 9223372036854775807 OR ttl_from <= p_now - q.ttl_ms)) THEN
        EXECUTE $sql$
        WITH old AS (
            SELECT key FROM {schema}.items
            WHERE gen = $1 AND listed = 'pending' AND ttl_from IS NOT NULL
              AND ($2 = 9223372036854775807 OR ttl_from <= $2 - $3)
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i SET phase = 'expired', listed = 'expired', updated_at = $2
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

-- The claim (version 13): reads due items through `listed`, and takes its items out of
-- the TTL index (`ttl_from`) as it takes them out of the due one, so that their ack
-- changes no indexed column. The same in the four claims below.
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
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
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

-- The claim from after a position (version 13).
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
        WHERE gen = $1 AND listed = 'pending' AND (not_before, key) > ($4, $5)
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

-- One claim for several consumers (version 13).
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
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
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

-- One claim for several consumers that also returns its rows' addresses (version 14).
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
        WHERE gen = $1 AND listed = 'pending' AND not_before <= $2
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

-- Version 8's second half of a claim, kept for a claim of older code under way (version
-- 13).
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
    SET phase = 'in_flight', listed = NULL, ttl_from = NULL, lease_owner = $2, lease_until = $3,
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

-- The one-statement settle of leased items (version 13): each item listed as its new
-- phase says (an ack to `done` leaves `listed` NULL, as the claim left it).
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
        SET phase = u.phase, listed = CASE WHEN u.phase IN ('in_flight', 'done') THEN NULL ELSE u.phase END,
            lease_owner = NULL, lease_until = NULL, updated_at = $8,
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

-- A batch of one owner's leases moved to one phase (version 13), the same way.
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
            SET phase = $4, listed = CASE WHEN $4 IN ('in_flight', 'done') THEN NULL ELSE $4 END,
                lease_owner = NULL, lease_until = NULL, updated_at = $5,
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

-- The same by address (version 14).
CREATE OR REPLACE FUNCTION {schema}.settle_located(
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
            SET phase = $5, listed = CASE WHEN $5 IN ('in_flight', 'done') THEN NULL ELSE $5 END,
                lease_owner = NULL, lease_until = NULL, updated_at = $6,
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

-- Pops a page (version 13): a phase that the indexes list is read through `listed`.
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
        WHERE gen = $1 AND key %1$s $2 %3$s
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
    CASE WHEN p_phase IS NULL THEN ''
         WHEN p_phase = 'in_flight' THEN
        $in$AND phase = $5
            AND key = ANY (ARRAY(SELECT unnest(keys) FROM {schema}.leases WHERE gen = $1))$in$
         WHEN p_phase = 'done' THEN 'AND phase = $5'
         ELSE 'AND listed = $5' END)
    USING g, coalesce(p_after, CASE WHEN p_reverse THEN 9223372036854775807 ELSE 0 END),
          p_offset, p_limit, p_phase;
END $$;

-- Retention's step (version 6): a listed phase is read through `listed`, `done` (and
-- `in_flight`) through `phase`, along the primary key.
CREATE OR REPLACE FUNCTION {schema}.prune_after(
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
    EXECUTE format($sql$
    WITH head AS (
        SELECT key, updated_at FROM {schema}.items
        WHERE gen = $1 AND %s = $2 AND key > $5 ORDER BY key LIMIT $4
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
    $sql$, CASE WHEN p_phase IN ('in_flight', 'done') THEN 'phase' ELSE 'listed' END)
    INTO removed, last USING g, p_phase, p_before, p_limit, p_after;
END $$;

-- A queue that gains a TTL gives its pending items their TTL start (version 3), found
-- through `listed`.
CREATE OR REPLACE FUNCTION {schema}.update_queue(p_id text, p_ttl_ms bigint, p_retention text, p_metadata json)
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
        WHERE gen = q.gen AND listed = 'pending' AND ttl_from IS NULL;
        INSERT INTO {schema}.ttl_gains (gen) VALUES (q.gen)
        ON CONFLICT (gen) DO UPDATE SET since = now();
    END IF;
    RETURN true;
END $$;

-- The same for the pushes that raced the change (version 3).
CREATE OR REPLACE FUNCTION {schema}.catch_up_ttl(p_grace_ms bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    FOR g IN SELECT gen FROM {schema}.ttl_gains
             WHERE since <= now() - make_interval(secs => p_grace_ms / 1000.0)
             FOR UPDATE SKIP LOCKED LOOP
        UPDATE {schema}.items SET ttl_from = created_at
        WHERE gen = g AND listed = 'pending' AND ttl_from IS NULL;
        DELETE FROM {schema}.ttl_gains WHERE gen = g;
    END LOOP;
    RETURN EXISTS (SELECT 1 FROM {schema}.ttl_gains);
END $$;
