-- hookspool schema, version 7: a push counts its items by appending a row to
-- `count_changes`, and the backend rolls those rows up into the counter rows.
--
-- Up to version 6 every push added to its session's counter row in `counts`
-- (`INSERT … ON CONFLICT DO UPDATE`). For one producer, each push its own transaction,
-- that upsert was the largest part of a push beyond the item's own row: 0.14× of a
-- one-row `INSERT`'s rate, and 25 µs of the server's CPU per push (the speculative
-- lookup in the primary key, the row's update, two more relations opened and locked).
-- Appending a row to a table without indexes costs a push 0.03×.
--
-- A count sums the counter rows and the changes not yet rolled up, in one snapshot: it is
-- exact at every moment. Each process rolls the changes up every 200 ms while it pushes
-- (and every 2 s otherwise), in one statement under a transaction-level advisory lock
-- (`DELETE … RETURNING` feeding the counters' upsert; a process that does not get the lock
-- leaves the turn to the one that has it), and vacuums the table every 2 s. A count
-- therefore reads at most a few seconds of pushes' rows, live or dead, whatever the number
-- of items: the same at 10 items or 10 million. Rows of a queue's thrown-away generation
-- are dropped, not rolled up; the trash deletes what is left of them.
--
-- `vacuum_truncate = false`: a vacuum does not take the exclusive lock that cutting the
-- table's empty tail needs (which pushes would queue behind); the pages stay, and pushes
-- fill them again. Once a minute the backend's vacuum asks for `TRUNCATE` all the same
-- (the server takes that lock only when no one waits for the table, and lets go as soon as
-- someone does), so that a table grown while a snapshot was held open shrinks again.
CREATE TABLE {schema}.count_changes (
    gen    bigint NOT NULL,
    phase  text COLLATE "C" NOT NULL,
    n      bigint NOT NULL
) WITH (
    vacuum_truncate = false,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- The push of applications (`push`, `fire`, `push_in`), which appends. (Until version 12
-- redefined `push_many`, this was filled in with the code's own push; it is frozen here as
-- the code last had it, so that version 7 creates what it created.)
CREATE OR REPLACE FUNCTION {schema}.push_many(
    p_queue text, p_payloads bytea[], p_metadata json[], p_not_before bigint[], p_now bigint
) RETURNS bigint[] LANGUAGE sql AS $$
WITH q AS (
    SELECT gen, key_seq, ttl_ms FROM {schema}.queues WHERE id = $1 FOR KEY SHARE
), ins AS (
    INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, not_before, metadata, payload,
                                ttl_from)
    SELECT q.gen, nextval(q.key_seq), 'pending', $5, $5, coalesce(u.nb, $5),
           coalesce(u.m, '{}'::json), u.p, CASE WHEN q.ttl_ms IS NOT NULL THEN $5::bigint END
    FROM q, unnest($2::bytea[], $3::json[], $4::bigint[]) WITH ORDINALITY AS u(p, m, nb, i)
    ORDER BY u.i
    RETURNING gen, key
), counted AS (
    INSERT INTO {schema}.count_changes (gen, phase, n)
    SELECT gen, 'pending', count(*) FROM ins GROUP BY gen
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM q)
    THEN coalesce((SELECT array_agg(key ORDER BY key) FROM ins), '{}') END
$$;

-- As in version 1; what it removed counts the changes not yet rolled up too.
CREATE OR REPLACE FUNCTION {schema}.reset(p_queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    old_gen bigint;
    removed bigint;
BEGIN
    SELECT gen INTO old_gen FROM {schema}.queues WHERE id = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    UPDATE {schema}.queues SET gen = nextval('{schema}.generations') WHERE id = p_queue;
    SELECT coalesce(sum(n), 0) INTO removed FROM (
        SELECT n FROM {schema}.counts WHERE gen = old_gen
        UNION ALL SELECT n FROM {schema}.count_changes WHERE gen = old_gen
    ) AS c;
    INSERT INTO {schema}.trash (gen) VALUES (old_gen);
    RETURN removed;
END $$;

-- As in version 1; a forgotten generation's count changes go with its counter rows.
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
            IF doomed_seq IS NOT NULL THEN
                EXECUTE format('DROP SEQUENCE IF EXISTS %s', doomed_seq);
            END IF;
        END IF;
    END IF;
    RETURN deleted;
END $$;
