//! The schema: versioned migrations applied at open under an advisory lock, and the checks
//! that come first (is it PostgreSQL, is it new enough, is the schema ours).

use hookspool::{DEFAULT_MAX_PAYLOAD, MAX_METADATA_ENTRIES, MAX_METADATA_KEY, MAX_METADATA_VALUE};
use tokio_postgres::Client;

use crate::error::OpenError;

/// The migrations, in order: version and SQL (with `{schema}` placeholders).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("sql/v1.sql")),
    (2, include_str!("sql/v2.sql")),
    (3, include_str!("sql/v3.sql")),
    (4, include_str!("sql/v4.sql")),
    (5, include_str!("sql/v5.sql")),
    (6, include_str!("sql/v6.sql")),
    (7, include_str!("sql/v7.sql")),
    (8, include_str!("sql/v8.sql")),
    (9, include_str!("sql/v9.sql")),
    (10, include_str!("sql/v10.sql")),
    (11, include_str!("sql/v11.sql")),
    (12, include_str!("sql/v12.sql")),
    (13, include_str!("sql/v13.sql")),
    (14, include_str!("sql/v14.sql")),
    (15, include_str!("sql/v15.sql")),
    (16, include_str!("sql/v16.sql")),
    (17, include_str!("sql/v17.sql")),
];

/// The schema version this code creates and understands.
pub const SCHEMA_VERSION: i32 = 17;

/// Oldest supported server (`server_version_num`).
const MIN_SERVER: i32 = 130_000;

/// SQL text for `schema`: `{push_statement}` becomes the locking push of this code
/// ([`crate::sql::push_locked`]; only the newest migration that defines `push_many` may use
/// it, since an older one must create what it created then: when the push changes, freeze
/// the old text into that migration, as `v1.sql` has it), `{schema}` the
/// quoted name, `{schema_name}` the bare name (for `format('%I', …)` and `pg_notify`
/// channels), `{counter_shards}` the number of counter shards, and the store's limits their
/// values.
pub(crate) fn render(sql: &str, schema: &str) -> String {
    sql.replace("{push_statement}", &crate::sql::push_locked())
        .replace("{schema}", &format!("\"{schema}\""))
        .replace("{schema_name}", schema)
        .replace(
            "{counter_shards}",
            &crate::connect::COUNTER_SHARDS.to_string(),
        )
        .replace("{max_payload}", &DEFAULT_MAX_PAYLOAD.to_string())
        .replace("{max_metadata_entries}", &MAX_METADATA_ENTRIES.to_string())
        .replace("{max_metadata_key}", &MAX_METADATA_KEY.to_string())
        .replace("{max_metadata_value}", &MAX_METADATA_VALUE.to_string())
}

/// Refuses a server whose `version()` is not PostgreSQL's (a look-alike speaking its
/// protocol) or whose `server_version_num` is below [`MIN_SERVER`].
fn check_server(
    target: &str,
    version: String,
    number: i32,
    shown: String,
) -> Result<(), OpenError> {
    if !version.starts_with("PostgreSQL") {
        return Err(OpenError::NotPostgres {
            target: target.to_owned(),
            version,
        });
    }
    if number < MIN_SERVER {
        return Err(OpenError::TooOld {
            target: target.to_owned(),
            version: shown,
        });
    }
    Ok(())
}

/// Checks the server, then brings `schema` to [`SCHEMA_VERSION`]. Several processes may
/// call it at once: a session advisory lock per schema lets one migrate while the others
/// wait, and they then find nothing left to do. The lock goes with the connection, which
/// the caller closes afterwards.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    target: &str,
) -> Result<(), OpenError> {
    migrate_to(client, schema, target, SCHEMA_VERSION).await
}

/// [`migrate`], up to version `last` (tests start from an older version this way).
pub(crate) async fn migrate_to(
    client: &mut Client,
    schema: &str,
    target: &str,
    last: i32,
) -> Result<(), OpenError> {
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version_num')::int, \
             current_setting('server_version')",
            &[],
        )
        .await?;
    check_server(target, row.get(0), row.get(1), row.get(2))?;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('hookspool migrations ' || $1, 0))",
            &[&schema],
        )
        .await?;
    let found = current_version(client, schema).await?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found && *v <= last) {
        let failed = |source| OpenError::Migration {
            schema: schema.to_owned(),
            version: *version,
            source,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(&render(sql, schema))
            .await
            .map_err(failed)?;
        tx.execute(
            &render(
                "INSERT INTO {schema}.migrations (version) VALUES ($1)",
                schema,
            ),
            &[version],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(schema, version, "applied a hookspool schema migration");
    }
    client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('hookspool migrations ' || $1, 0))",
            &[&schema],
        )
        .await?;
    Ok(())
}

/// The schema's version: 0 for a schema that does not exist or is empty (it is created, with
/// its migrations table); an error for one that holds anything else.
async fn current_version(client: &Client, schema: &str) -> Result<i32, OpenError> {
    let owner = client
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text, \
             to_regclass(format('%I.migrations', nspname)) IS NOT NULL, \
             (SELECT count(*) FROM pg_class WHERE relnamespace = n.oid) \
             + (SELECT count(*) FROM pg_proc WHERE pronamespace = n.oid) \
             FROM pg_namespace n WHERE nspname = $1",
            &[&schema],
        )
        .await?;
    match owner {
        Some(row) if row.get::<_, bool>(1) => {}
        Some(row) if row.get::<_, i64>(2) > 0 => {
            return Err(OpenError::ForeignSchema {
                schema: schema.to_owned(),
                owner: row.get(0),
            });
        }
        _ => {
            client
                .batch_execute(&render(
                    "CREATE SCHEMA IF NOT EXISTS {schema}; \
                     CREATE TABLE IF NOT EXISTS {schema}.migrations ( \
                         version integer PRIMARY KEY, \
                         applied_at timestamptz NOT NULL DEFAULT now())",
                    schema,
                ))
                .await?;
        }
    }
    let row = client
        .query_one(
            &render(
                "SELECT coalesce(max(version), 0) FROM {schema}.migrations",
                schema,
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(version: &str, number: i32, shown: &str) -> Result<(), OpenError> {
        check_server("db:5432/app", version.into(), number, shown.into())
    }

    #[test]
    fn postgres_13_and_later_are_accepted() {
        check("PostgreSQL 13.0 on x86_64-pc-linux-gnu", 130_000, "13.0").expect("13.0");
        check("PostgreSQL 17.2 (Debian 17.2-1)", 170_002, "17.2").expect("17.2");
    }

    #[test]
    fn an_older_server_is_refused_with_its_version() {
        let e = check("PostgreSQL 12.19 on x86_64", 120_019, "12.19").expect_err("12");
        assert!(matches!(e, OpenError::TooOld { .. }), "{e}");
        let shown = e.to_string();
        assert!(
            shown.contains("12.19") && shown.contains("db:5432/app"),
            "{shown}"
        );
    }

    #[test]
    fn a_look_alike_is_refused_with_what_it_said() {
        let said = "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu)";
        let e = check(said, 130_000, "13.0.0").expect_err("not PostgreSQL");
        assert!(matches!(e, OpenError::NotPostgres { .. }), "{e}");
        assert!(e.to_string().contains("CockroachDB"), "{e}");
    }
}
