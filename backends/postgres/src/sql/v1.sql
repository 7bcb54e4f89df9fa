-- hookspool schema, version 1. `{schema}` is replaced by the configured schema's quoted name.
--
-- Tables:
--   queues   one row per queue. `gen` names the generation of its items: `reset` and
--            `delete_queue` move a queue to a new generation in one short transaction and
--            leave the old generation's rows to be deleted in batches (see `trash`), so no
--            call holds locks for the time it takes to delete a large queue.
--   names    first-writer-wins records (see below).
--   items    one row per item, keyed by (gen, key). Timestamps are milliseconds since the
--            epoch (bigint), as in the engine's model.
--   counts   item counts by (gen, phase) in sharded rows, summed on read (written by each
--            statement that changes phases, in the same transaction): `count` costs the same at 10 items or 10 million, and writers
--            in different sessions update different rows instead of one hot row.
--   trash    generations whose rows are still being deleted.
--
-- Keys come from one sequence per queue: `nextval` never waits for another transaction's
-- commit, so pushes in many sessions (and in applications' long transactions) never
-- serialize on a counter row. The price: a rolled-back push leaves a gap, and concurrent
-- batches may interleave (the backend states this in its capabilities).

CREATE TABLE {schema}.queues (
    id          text PRIMARY KEY,
    gen         bigint NOT NULL UNIQUE,
    key_seq     regclass NOT NULL,
    ttl_ms      bigint,
    retention   text NOT NULL,
    created_at  bigint NOT NULL,
    metadata    json NOT NULL
);

CREATE SEQUENCE {schema}.generations;

CREATE TABLE {schema}.items (
    gen          bigint NOT NULL,
    key          bigint NOT NULL,
    -- "C": phases compare byte by byte in the indexes, whatever the database's locale.
    phase        text COLLATE "C" NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    not_before   bigint NOT NULL,
    lease_owner  text,
    lease_until  bigint,
    last_error   text,
    -- `json`, not `jsonb`: metadata values are arbitrary strings, `\u0000` included.
    metadata     json NOT NULL,
    payload      bytea NOT NULL,
    PRIMARY KEY (gen, key)
) WITH (
    fillfactor = 80,
    -- A claim walks the due index from its oldest entry, over the entries of items claimed
    -- since the last vacuum: vacuum after every few thousand changes, not after a fifth
    -- of the table (the default), and without pausing.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);

-- Pages of one phase, by key.
CREATE INDEX items_by_phase ON {schema}.items (gen, phase, key);
-- Claims: due pending items in (not_before, key) order. Partial, so it holds only what is
-- waiting, and claimed items leave it.
CREATE INDEX items_due ON {schema}.items (gen, not_before, key) WHERE phase = 'pending';
-- The TTL sweep: pending items by age.
CREATE INDEX items_age ON {schema}.items (gen, created_at) WHERE phase = 'pending';
-- The lease sweep: in-flight items by lease end.
CREATE INDEX items_leases ON {schema}.items (gen, lease_until) WHERE phase = 'in_flight';

CREATE TABLE {schema}.counts (
    gen    bigint NOT NULL,
    phase  text COLLATE "C" NOT NULL,
    shard  integer NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (gen, phase, shard)
) WITH (
    -- Every change updates one of these few rows: room on the page for in-place (HOT)
    -- updates, and a vacuum after every few hundred, so that lookups do not walk long
    -- chains of dead versions.
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);

-- First-writer-wins records (`Backend::once`): idempotency keys of the webhook layer. The
-- primary key is what makes a name's write happen once across every process.
CREATE TABLE {schema}.names (
    space       text NOT NULL,
    name        text NOT NULL,
    value       bytea NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (space, name)
);
CREATE INDEX names_by_age ON {schema}.names (space, created_at);

-- A generation stays here until its rows are gone and a grace period has passed since it
-- was thrown away: a push that read the old generation just before (the backend's own
-- pushes do not lock the queue row) has committed by then, and its row is deleted too. A
-- deleted queue's key sequence is dropped at the same time, not before.
CREATE TABLE {schema}.trash (
    gen      bigint PRIMARY KEY,
    since    timestamptz NOT NULL DEFAULT now(),
    key_seq  regclass
);

-- The counter shard of this session: each session keeps to one shard, so two sessions
-- contend only when their process ids fall on the same one of 16.
CREATE FUNCTION {schema}.shard() RETURNS integer LANGUAGE sql STABLE AS
$$ SELECT pg_backend_pid() % 16 $$;

-- Adds `p_deltas` to the counts of `p_phases` (one entry per phase and change) in this
-- session's shard. Every statement that changes phases calls it (or does the same inline):
-- explicit counting costs less than statement triggers with transition tables.
CREATE FUNCTION {schema}.add_counts(p_gen bigint, p_phases text[], p_deltas bigint[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
    SELECT p_gen, u.phase, {schema}.shard(), sum(u.delta)
    FROM unnest(p_phases, p_deltas) AS u(phase, delta)
    GROUP BY u.phase HAVING sum(u.delta) <> 0 ORDER BY u.phase
    ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
$$;

-- Milliseconds since the epoch, now (for calls from SQL, which pass no clock).
CREATE FUNCTION {schema}.now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE FUNCTION {schema}.create_queue(
    p_id text, p_ttl_ms bigint, p_retention text, p_created_at bigint, p_metadata json
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g bigint := nextval('{schema}.generations');
    seq text := format('%I.%I', '{schema_name}', 'keys_' || g);
BEGIN
    IF EXISTS (SELECT 1 FROM {schema}.queues WHERE id = p_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'HS409', MESSAGE = format('queue `%s` already exists', p_id);
    END IF;
    EXECUTE format('CREATE SEQUENCE %s', seq);
    INSERT INTO {schema}.queues (id, gen, key_seq, ttl_ms, retention, created_at, metadata)
    VALUES (p_id, g, seq::regclass, p_ttl_ms, p_retention, p_created_at, p_metadata);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING ERRCODE = 'HS409', MESSAGE = format('queue `%s` already exists', p_id);
END $$;

-- Pushes a batch in the caller's transaction: all or nothing, keys in batch order; returns
-- the keys, or NULL for a missing queue. The statement `push_in` sends (`push_locked` in
-- `sql.rs`): the queue row stays locked against `reset` and `delete_queue` until the
-- transaction ends, the keys come from the queue's sequence in batch order (PostgreSQL
-- evaluates `nextval` after the sort), and the pending counter is written in the same
-- statement.
CREATE FUNCTION {schema}.push_many(
    p_queue text, p_payloads bytea[], p_metadata json[], p_not_before bigint[], p_now bigint
) RETURNS bigint[] LANGUAGE sql AS $$
WITH q AS (
    SELECT gen, key_seq FROM {schema}.queues WHERE id = $1 FOR KEY SHARE
), ins AS (
    INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, not_before, metadata, payload)
    SELECT q.gen, nextval(q.key_seq), 'pending', $5, $5, coalesce(u.nb, $5),
           coalesce(u.m, '{}'::json), u.p
    FROM q, unnest($2::bytea[], $3::json[], $4::bigint[]) WITH ORDINALITY AS u(p, m, nb, i)
    ORDER BY u.i
    RETURNING gen, key
), counted AS (
    INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
    SELECT gen, 'pending', {schema}.shard(), count(*) FROM ins GROUP BY gen
    ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM q)
    THEN coalesce((SELECT array_agg(key ORDER BY key) FROM ins), '{}') END
$$;

-- Returns expired leases to pending, then moves pending items past the queue's TTL to
-- `expired` (in that order, so a released item past its TTL expires in the same sweep).
-- Rows another transaction holds are skipped: a later sweep takes them.
CREATE FUNCTION {schema}.sweep_gen(q {schema}.queues, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- Each update runs only when a read of its index finds work: starting an UPDATE costs
    -- a claim more than the read, and there is usually nothing to do.
    released := 0;
    IF EXISTS (SELECT 1 FROM {schema}.items
               WHERE gen = q.gen AND phase = 'in_flight' AND lease_until <= p_now) THEN
        WITH due AS (
            SELECT key FROM {schema}.items
            WHERE gen = q.gen AND phase = 'in_flight' AND lease_until <= p_now
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i
            SET phase = 'pending', lease_owner = NULL, lease_until = NULL,
                not_before = p_now, updated_at = p_now
            FROM due WHERE i.gen = q.gen AND i.key = due.key
            RETURNING 1
        ) SELECT count(*) INTO released FROM done;
    END IF;
    expired := 0;
    IF q.ttl_ms IS NOT NULL AND (p_now = 9223372036854775807 OR p_now >= q.ttl_ms)
       AND EXISTS (SELECT 1 FROM {schema}.items
                   WHERE gen = q.gen AND phase = 'pending'
                     AND (p_now = 9223372036854775807 OR created_at <= p_now - q.ttl_ms)) THEN
        WITH old AS (
            SELECT key FROM {schema}.items
            WHERE gen = q.gen AND phase = 'pending'
              AND (p_now = 9223372036854775807 OR created_at <= p_now - q.ttl_ms)
            FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE {schema}.items i SET phase = 'expired', updated_at = p_now
            FROM old WHERE i.gen = q.gen AND i.key = old.key
            RETURNING 1
        ) SELECT count(*) INTO expired FROM done;
    END IF;
    IF released + expired > 0 THEN
        PERFORM {schema}.add_counts(q.gen, ARRAY['in_flight', 'pending', 'pending', 'expired'],
            ARRAY[-released, released, -expired, expired]);
    END IF;
END $$;

CREATE FUNCTION {schema}.sweep(p_queue text, p_now bigint, OUT released bigint, OUT expired bigint)
LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    SELECT s.released, s.expired INTO released, expired FROM {schema}.sweep_gen(q, p_now) s;
END $$;

-- Sweeps, then leases up to `p_limit` due pending items in (not_before, key) order. Rows
-- other sessions are claiming are skipped, never waited for.
CREATE FUNCTION {schema}.claim(
    p_queue text, p_owner text, p_limit integer, p_until bigint, p_now bigint
) RETURNS SETOF {schema}.items LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
    claimed bigint;
BEGIN
    SELECT * INTO q FROM {schema}.queues WHERE id = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    PERFORM {schema}.sweep_gen(q, p_now);
    RETURN QUERY
    WITH due AS (
        SELECT key FROM {schema}.items
        WHERE gen = q.gen AND phase = 'pending' AND not_before <= p_now
        ORDER BY not_before, key
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {schema}.items i
    SET phase = 'in_flight', lease_owner = p_owner, lease_until = p_until,
        attempts = i.attempts + 1, updated_at = p_now
    FROM due WHERE i.gen = q.gen AND i.key = due.key
    RETURNING i.*;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed > 0 THEN
        INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
        VALUES (q.gen, 'in_flight', {schema}.shard(), claimed),
               (q.gen, 'pending', {schema}.shard(), -claimed)
        ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
END $$;

-- Moves a queue to a new generation: its items are gone at once for every reader, and
-- deleted in batches afterwards. The key sequence is kept. Returns how many items it held.
CREATE FUNCTION {schema}.reset(p_queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    old_gen bigint;
    removed bigint;
BEGIN
    SELECT gen INTO old_gen FROM {schema}.queues WHERE id = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', p_queue);
    END IF;
    UPDATE {schema}.queues SET gen = nextval('{schema}.generations') WHERE id = p_queue;
    SELECT coalesce(sum(n), 0) INTO removed FROM {schema}.counts WHERE gen = old_gen;
    INSERT INTO {schema}.trash (gen) VALUES (old_gen);
    RETURN removed;
END $$;

-- Deletes a queue; its items (and its key sequence) are deleted in the background.
CREATE FUNCTION {schema}.delete_queue(p_queue text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    q {schema}.queues;
BEGIN
    DELETE FROM {schema}.queues WHERE id = p_queue RETURNING * INTO q;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO {schema}.trash (gen, key_seq) VALUES (q.gen, q.key_seq);
    RETURN true;
END $$;

-- Deletes up to `p_limit` rows of a thrown-away generation; once none are left and
-- `p_grace_ms` have passed since it was thrown away, drops its key sequence (a deleted
-- queue's) and forgets it. Returns how many rows it deleted.
CREATE FUNCTION {schema}.empty_trash(p_gen bigint, p_limit integer, p_grace_ms bigint)
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
            IF doomed_seq IS NOT NULL THEN
                EXECUTE format('DROP SEQUENCE IF EXISTS %s', doomed_seq);
            END IF;
        END IF;
    END IF;
    RETURN deleted;
END $$;

-- ---- The SQL API: the outbox for applications in any language ---------------------------
--
-- Both functions write in the caller's transaction: nothing is visible until it commits,
-- and a rollback leaves nothing behind (a rolled-back push only uses up keys). Both wake
-- the hookspool processes listening on the schema's channel when the transaction commits.

-- Checks what the store checks of an item pushed through SQL.
CREATE FUNCTION {schema}.check_item(p_payload bytea, p_metadata jsonb) RETURNS json
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    entry record;
BEGIN
    IF p_payload IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid input: the payload must not be null';
    END IF;
    IF length(p_payload) > {max_payload} THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'payload of %s bytes is over the limit of {max_payload} bytes', length(p_payload));
    END IF;
    IF p_metadata IS NULL THEN
        RETURN '{}'::json;
    END IF;
    IF jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'invalid input: metadata must be a JSON object of strings';
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(p_metadata)) > {max_metadata_entries} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'invalid input: metadata has more than {max_metadata_entries} entries';
    END IF;
    FOR entry IN SELECT key, value FROM jsonb_each(p_metadata) LOOP
        IF jsonb_typeof(entry.value) <> 'string' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'invalid input: metadata value for %s must be a string', to_json(entry.key));
        END IF;
        IF octet_length(entry.key) NOT BETWEEN 1 AND {max_metadata_key}
            OR octet_length(entry.value #>> '{}') > {max_metadata_value} THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'invalid input: metadata entry %s is too long', to_json(entry.key));
        END IF;
    END LOOP;
    RETURN p_metadata::json;
END $$;

-- Pushes one item to `queue` in the caller's transaction; returns its key.
-- `not_before`: not handed out before then (default: at once).
CREATE FUNCTION {schema}.push(
    queue text, payload bytea, metadata jsonb DEFAULT '{}', not_before timestamptz DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    m json := {schema}.check_item(payload, metadata);
    now_ms bigint := {schema}.now_ms();
    keys bigint[];
BEGIN
    keys := {schema}.push_many(queue, ARRAY[payload], ARRAY[m],
        ARRAY[(extract(epoch FROM not_before) * 1000)::bigint], now_ms);
    IF keys IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = format('queue `%s` does not exist', queue);
    END IF;
    PERFORM pg_notify('{schema_name}', 'sql|' || queue);
    RETURN keys[1];
END $$;

-- The same, for a JSON payload (stored as its text, UTF-8).
CREATE FUNCTION {schema}.push(
    queue text, payload jsonb, metadata jsonb DEFAULT '{}', not_before timestamptz DEFAULT NULL
) RETURNS bigint LANGUAGE sql AS $$
    SELECT {schema}.push(queue, convert_to(payload::text, 'UTF8'), metadata, not_before)
$$;

-- Fires `event` to every enabled subscription that wants it (exact name, `prefix.*` or
-- `*`; only `owner`'s when given), exactly as `Hooks::fire` does: one delivery per
-- subscription, in subscription id order. Returns the delivery ids (`msg_…`).
CREATE FUNCTION {schema}.fire(event text, payload jsonb, owner text DEFAULT NULL)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    subs {schema}.queues;
    deliveries {schema}.queues;
    targets text[];
    body bytea;
    keys bigint[];
BEGIN
    IF event IS NULL OR event !~ '^[A-Za-z0-9_.:/-]{1,128}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'invalid event name %s: 1 to 128 letters, digits, ''_'', ''-'', ''.'', '':'' and ''/''',
            coalesce(to_json(event)::text, 'null'));
    END IF;
    IF owner IS NOT NULL AND owner !~ '^[A-Za-z0-9_:-]{1,128}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'invalid owner %s: 1 to 128 letters, digits, ''_'', ''-'' and '':''', to_json(owner));
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid input: the payload must not be null';
    END IF;
    SELECT * INTO subs FROM {schema}.queues WHERE id = 'hookspool.subscriptions';
    SELECT * INTO deliveries FROM {schema}.queues WHERE id = 'hookspool.deliveries';
    IF subs.id IS NULL OR deliveries.id IS NULL OR deliveries.metadata->>'id_nonce' IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE =
            'no webhook queues in this schema yet: start `hookspool serve` on it once';
    END IF;
    SELECT array_agg(s.metadata->>'id' ORDER BY s.metadata->>'id' COLLATE "C") INTO targets
    FROM {schema}.items s
    WHERE s.gen = subs.gen AND s.phase <> 'disabled'
      AND (owner IS NULL OR s.metadata->>'owner' = owner)
      AND EXISTS (
          SELECT 1 FROM unnest(string_to_array(s.metadata->>'events', ' ')) AS p
          WHERE p = '*' OR p = event
             OR (right(p, 1) = '*' AND length(event) > length(p) - 1
                 AND left(event, length(p) - 1) = left(p, -1)));
    IF targets IS NULL THEN
        RETURN '{}';
    END IF;
    body := convert_to(payload::text, 'UTF8');
    PERFORM {schema}.check_item(body, NULL);
    keys := {schema}.push_many('hookspool.deliveries',
        array_fill(body, ARRAY[cardinality(targets)]),
        ARRAY(SELECT json_build_object('event', event, 'subscription', t) FROM unnest(targets) AS t),
        array_fill(NULL::bigint, ARRAY[cardinality(targets)]),
        {schema}.now_ms());
    IF keys IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'HS404', MESSAGE = 'queue `hookspool.deliveries` does not exist';
    END IF;
    PERFORM pg_notify('{schema_name}', 'sql|hookspool.deliveries');
    RETURN ARRAY(SELECT 'msg_' || (deliveries.metadata->>'id_nonce') || lpad(to_hex(k), 16, '0')
                 FROM unnest(keys) AS k);
END $$;
