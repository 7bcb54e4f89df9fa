-- hookspool schema, version 2: a counter shard per session instead of per process id.
--
-- Version 1 wrote a session's counts to shard `pid % 16`. Two sessions on one shard update
-- the same counter row, so the second waits for the first to commit (its WAL flush
-- included): with 16 pushing sessions, process ids chosen by the system collide often, and
-- pushes ran a quarter slower than with a shard each. Now each pooled hookspool connection
-- takes a shard no other hookspool session holds, when it connects (a session advisory
-- lock on one of {counter_shards}), and names it in the setting `hookspool.counter_shard`.
-- Sessions that did not take one (applications calling `push` and `fire` in their own
-- transactions) use their process id's. The counts of the old shards stay where they are:
-- a count sums every shard.
CREATE OR REPLACE FUNCTION {schema}.shard() RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('hookspool.counter_shard', true), '')::integer,
                    pg_backend_pid()) % {counter_shards}
$$;
