-- hookspool schema, version 5: a claim locks its rows first, then leases them; the index of
-- items by phase leaves out `in_flight` and `done`; a large batch of one owner's settles is
-- one statement (`settle_leased`, near the end).
--
-- The claim. Version 4's claim was one statement: `WITH due AS (SELECT … FOR UPDATE SKIP
-- LOCKED) UPDATE … FROM due`. The server runs it row by row: it locks one due row, writes its
-- new version, then locks the next. Claims running at once walk the same end of the due
-- index at the same pace, and keep meeting the rows another one has just locked: each such
-- row is read and tried before it is skipped. With 4 consumers claiming 1024 items each, the
-- statement took 47 ms where locking first and then updating took 34 ms (`pgbench`, 4
-- clients, 200,000 due items). Now the claim locks its rows in one statement (a few µs a
-- row), and leases them by key in a second: the others' scans pass over a block of rows
-- already locked instead of racing for each one.
--
-- The index by phase. Every change of phase writes a new version of the row, and the new
-- version enters every index whose condition it meets. A claim and its ack are the two
-- changes nearly every item goes through, to `in_flight` and then to `done`, and each paid
-- an entry in `items_by_phase` besides the primary key's: about an eighth of what a round of
-- claim and ack cost (4 consumers of 1024 items: 69k rows/s with it, 78-80k without).
-- Neither phase needs it:
--   - `in_flight` items are all in `items_leases` (by lease end), and there are only as many
--     as the consumers hold: a page of them reads that index and sorts by key;
--   - `done` is where nearly every item ends, so in a queue that keeps them they are most of
--     its rows, and the oldest: a page of them, or retention's prune, reads the primary key
--     in key order and passes over the items of other phases among them.
-- Pages of every other phase (`pending`, `dead`, `expired`, `corrupt`, an application's
-- own) still read `items_by_phase`. The statements that page by phase name the condition
-- (`phase NOT IN ('in_flight', 'done')`) so that a plan the server keeps can use the index.
--
-- Retention's prune (`prune_phase`) locked and deleted the rows it had chosen by key and
-- phase together. On a queue that had just grown, the server then read the partial index
-- by phase alone and tested each entry's key (40,010 entries read for a prune of 10 on a
-- queue of 20,000, in `tests/plans.rs`): it now
-- locks them by key alone, checks the phase of what it locked, and deletes those.
--
-- Upgrading: building the new index reads the items table once, and holds its writers
-- meanwhile (as version 3 did). Readers go on: the new index is built under a name of its
-- own (a build locks the table against writes only), and the old one is dropped last (a
-- drop locks the table against everything), just before the migration commits.

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

-- Retention's step, as in version 4 (see there), with the chosen rows locked and deleted by
-- key alone: the phase of each locked row is checked after the lock (a row moved out of the
-- phase meanwhile stays), and the rows locked are the ones deleted.
CREATE OR REPLACE FUNCTION {schema}.prune_phase(p_queue text, p_phase text, p_before bigint, p_limit bigint)
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
    ), locked AS (
        SELECT key, phase FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM old))
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM {schema}.items
        WHERE gen = $1 AND key = ANY (ARRAY(SELECT key FROM locked WHERE phase = $2))
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

-- Settles a batch whose every entry expects a lease of `p_owner` (acks, and the delivery
-- loop's outcomes): one statement, no lock pass. Entry i moves item `p_keys[i]` to
-- `p_phases[i]` (NULL: removes it), with `p_not_before[i]` (for `pending`; NULL: now),
-- `p_errors[i]` and `p_metadata[i]` (NULL: kept), if and only if it is leased to `p_owner`
-- when the row is locked. An item with a lease is in flight, so the counts follow without
-- reading the rows first. Returns the keys it applied (the caller works out why the others
-- were not), or NULL for a missing queue. Planned at every call, as the claim is. Arrays of
-- different lengths are refused: `unnest` would pad the short ones with NULL, and a NULL
-- phase means a removal.
CREATE FUNCTION {schema}.settle_leased(
    p_queue text, p_owner text, p_keys bigint[], p_phases text[], p_not_before bigint[],
    p_errors text[], p_metadata json[], p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    applied bigint[];
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
    -- Each statement reads the arrays itself: from a shared CTE, the server once joined
    -- every updated row against all of its entries (`unnest` drives the lookups by key).
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
        RETURNING i.key, i.phase
    ), removed AS (
        DELETE FROM {schema}.items i USING unnest($3::bigint[], $4::text[]) AS u(key, phase)
        WHERE i.gen = $1 AND i.key = u.key AND u.phase IS NULL AND i.lease_owner = $2
        RETURNING i.key
    ), counted AS (
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        SELECT $1, d.phase, {schema}.shard(), sum(d.n)
        FROM (SELECT phase, 1 AS n FROM moved
              UNION ALL SELECT 'in_flight', -1 FROM moved
              UNION ALL SELECT 'in_flight', -1 FROM removed) AS d
        GROUP BY d.phase HAVING sum(d.n) <> 0 ORDER BY d.phase
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT coalesce(array_agg(key), '{}')
    FROM (SELECT key FROM moved UNION ALL SELECT key FROM removed) AS done
    $sql$ INTO applied USING g, p_owner, p_keys, p_phases, p_not_before, p_errors, p_metadata, p_now;
    RETURN applied;
END $$;

-- Pages of one phase, by key, for the phases other than `in_flight` and `done` (see above):
-- built first, then put in the old index's place (see "Upgrading" above).
CREATE INDEX items_by_phase_v5 ON {schema}.items (gen, phase, key)
    WHERE phase NOT IN ('in_flight', 'done');
DROP INDEX {schema}.items_by_phase;
ALTER INDEX {schema}.items_by_phase_v5 RENAME TO items_by_phase;
