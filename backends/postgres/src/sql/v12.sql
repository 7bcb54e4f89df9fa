-- hookspool schema, version 12: the applications' push (`push_many`, under `push`, `fire`
-- and `push_in`) is the backend's leaner batch statement. A function only: no table
-- changes.
--
-- The statement no longer sorts its rows by the arrays' ordinality to draw keys in batch
-- order. The arrays are unnested in the select list, where several set-returning functions
-- run in lockstep and stream their rows in order (in `FROM` each array's rows were first
-- copied into a store of its own). The queue's one row joined to those rows has no join
-- condition, so the only plan is a nested loop that passes them on in order, and `nextval`
-- draws each row's key as it passes. `tests/plans.rs` checks that plan. For batches of
-- 1024, the server's instructions per item went from 48.0k to 44.5-44.7k
-- (`benches/scripts/pg_instructions.sh 8 2 push`; the plain 1,000-row `INSERT` costs 35.5k).
-- A NULL array of metadata or of due times stands for NULL in every row, as before.

CREATE OR REPLACE FUNCTION {schema}.push_many(
    p_queue text, p_payloads bytea[], p_metadata json[], p_not_before bigint[], p_now bigint
) RETURNS bigint[] LANGUAGE sql AS $$
{push_statement}
$$;
