-- hookspool schema, version 9: pending items are paged by key through an index of their
-- own, whose entries hold two integers; `items_by_phase` keeps the other phases.
--
-- Every pushed item enters three indexes: the primary key, `items_due` (the claims') and
-- the index that pages it by key while it is pending. Up to version 8 that last one was
-- `items_by_phase` (`gen, phase, key`), whose every comparison on the way to an entry's
-- place compares the phase's text too. Pending items make most of what that index holds
-- (the phases it also serves, `dead`, `expired`, `corrupt` and an application's own, are
-- where few items end), so they now have `items_pending` (`gen, key`), and
-- `items_by_phase` leaves them out as it already left out `in_flight` and `done`.
-- Batches of 1024 pushed by 2 producers, 6 alternating pairs of runs: medians 207k rows/s
-- with the old index, 218k with the new ones. (Without any index of pending items by key,
-- 3 runs gave 209-244k: that index is the price of paging pending items by key.)
--
-- A page of pending items names the phase as a constant, so that a plan the server keeps
-- can use `items_pending`; a page of another indexed phase names the condition
-- `phase NOT IN ('pending', 'in_flight', 'done')` as well as the phase (see `PageFilter`).
-- The SQL functions that page or prune a phase plan their statements at every call with
-- the phase in hand, and read whichever of the two indexes holds it.
--
-- Upgrading: as in version 5, the new indexes are built under names of their own while
-- readers go on (a build holds the table's writers), and the old index is dropped last,
-- just before the migration commits.

CREATE INDEX items_pending ON {schema}.items (gen, key) WHERE phase = 'pending';
CREATE INDEX items_by_phase_v9 ON {schema}.items (gen, phase, key)
    WHERE phase NOT IN ('pending', 'in_flight', 'done');
DROP INDEX {schema}.items_by_phase;
ALTER INDEX {schema}.items_by_phase_v9 RENAME TO items_by_phase;
