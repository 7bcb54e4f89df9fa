-- hookspool schema, version 17: the two rules of an item's row (an item in flight has a
-- lease row, version 13; `listed` agrees with `phase`, version 15) are checked on updates
-- only, by a trigger, instead of by CHECK constraints on every write.
--
-- PostgreSQL prepares a table's CHECK constraints afresh for every statement that writes
-- it: it reads each one's stored expression back from its text form and simplifies it
-- before the first row. For a push of one item that is most of what the checks cost, and
-- it was a quarter of everything the server did for it (counted with callgrind in a
-- backend of PostgreSQL 15, 2,000 pushes: 259-271k instructions a push with the checks,
-- 196k without them; a plain one-row INSERT into the bench's baseline table, 80k).
--
-- No insert needs them. An item is inserted only by a push, and every push statement of
-- every version writes the phase 'pending', no lease, and `listed` at its default
-- ('pending', since version 15). The rules can only be broken where a phase changes: by an
-- update. So a row trigger runs after each update that names `phase`, `listed` or
-- `lease_id`, and its `WHEN` condition is the two rules: an update that keeps them queues
-- nothing and calls nothing; one that breaks either calls `items_refused`, which raises
-- the error the check raised (`23514`, `check_violation`, naming the same constraint, so
-- that what an older check-based caller matched on still matches), and the whole statement
-- is undone. The condition is still prepared per statement, as a check was, so an update
-- of one item costs what it did; an update of many pays it once, and 1,200-1,800
-- instructions per row updated for the trigger (a row's old version is read back for
-- it): 3% of a claim and its ack together (112.4k instructions per item against 108.8k
-- under version 16, 4 consumers).
--
-- Upgrading: no row is read. Every row already keeps both rules (the checks held them);
-- the trigger is created before the checks are dropped, in the same transaction.

CREATE OR REPLACE FUNCTION {schema}.items_refused() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.phase = 'in_flight' AND NEW.lease_id IS NULL THEN
        RAISE EXCEPTION 'item % of generation % would be in flight without a lease row',
            NEW.key, NEW.gen
            USING ERRCODE = 'check_violation', CONSTRAINT = 'items_in_flight_have_a_lease_row',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
                  HINT = 'a claim writes its lease row and its items in one statement';
    END IF;
    RAISE EXCEPTION 'item % of generation % would have phase % but be listed as %',
        NEW.key, NEW.gen, quote_literal(NEW.phase), coalesce(quote_literal(NEW.listed), 'NULL')
        USING ERRCODE = 'check_violation', CONSTRAINT = 'items_listed_by_phase',
              SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
              HINT = '`listed` is NULL for in_flight and done, and the phase for every other';
END $$;

CREATE TRIGGER items_rules
    AFTER UPDATE OF phase, listed, lease_id ON {schema}.items
    FOR EACH ROW
    WHEN (NOT ((NEW.lease_id IS NOT NULL OR NEW.phase <> 'in_flight')
               AND CASE WHEN NEW.phase IN ('in_flight', 'done') THEN NEW.listed IS NULL
                        ELSE NEW.listed IS NOT DISTINCT FROM NEW.phase END))
    EXECUTE FUNCTION {schema}.items_refused();

ALTER TABLE {schema}.items DROP CONSTRAINT items_in_flight_have_a_lease_row;
ALTER TABLE {schema}.items DROP CONSTRAINT items_listed_by_phase;
