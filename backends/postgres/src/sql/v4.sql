-- hookspool schema, version 4: the claim and the sweep plan their statements at every call.
--
-- The server keeps a generic plan for a function's statement once it has chosen one, and it
-- chooses it from the table sizes it sees then. A plan made while a queue held a few items
-- (every new schema, and a queue its retention had emptied) found the claimed rows by their
-- generation alone, through `items_by_phase`. Once the queue held thousands, each claimed
-- item read every row of its generation: a claim of 15 took 70 ms, and a daemon delivered a
-- few hundred a second instead of thousands, until autovacuum's next ANALYZE (up to a minute
-- later) made the server plan again. The more often one session ran the claim, the likelier
-- it was (a pool handing out the connection used last made it happen in a run of five).
--
-- With `plan_cache_mode = force_custom_plan` they are planned with the sizes of the moment;
-- the claim was planned at every call anyway once its table had been analyzed (about 0.1 ms),
-- since its generic plan then costs more than a custom one. `sweep_gen` runs inside both.
-- Nothing else changes: no table is touched.
ALTER FUNCTION {schema}.claim(text, text, integer, bigint, bigint)
    SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION {schema}.sweep(text, bigint)
    SET plan_cache_mode = force_custom_plan;
