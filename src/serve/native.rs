//! The latest snapshot's `targets` as a native DuckDB table, kept on this machine.
//!
//! Over the Parquet file, a list query ("the 25 best targets") reads the sort keys of
//! every row and then decodes, for the winners, whole row groups of the shown columns
//! (the reasons lists most of it), and the family condition joins every domain with
//! every other: about 0.5 s at a million targets. The copy is the same rows in the
//! lists' order ([`LIST_ORDER`]) with the family condition computed once (`listed`), so
//! DuckDB's top-N stops after the first row groups: about 13 ms at a million.
//!
//! The copy is built once per snapshot (the nightly export, or the first query after a
//! night), written beside its final name and moved into place, and the copies of older
//! snapshots of the same store are removed then. The Parquet files stay the record;
//! the copy is a cache any run of `query` or `export` can rebuild.

use std::path::{Path, PathBuf};

use duckdb::Connection;

use super::{ServeError, quote_literal, sql_error};
use crate::store::{FileEntry, Manifest};

/// The order of every list of targets: best score first, then traffic, then domain.
pub const LIST_ORDER: &str = "icp_score DESC, sw_monthly_visits DESC NULLS LAST, domain";

/// What DuckDB may hold while it builds the copy (it spills to a folder beside it past that).
const BUILD_MEMORY: &str = "2GB";

/// Bumped when the copy's shape changes: an older copy is then built again.
const FORMAT: u32 = 1;

/// `listed` over a targets table read from `from`: the targets a list shows, one per
/// account — a target outside any family, a family's primary, or a member whose primary
/// is not among the targets. A table from before families lists every target.
fn listed(conn: &Connection, from: &str) -> Result<String, ServeError> {
    let has_families: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM (DESCRIBE SELECT * FROM {from}) WHERE column_name = 'family_primary'"),
            [],
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    Ok(if has_families > 0 {
        format!(
            "family_primary IS NULL OR family_primary = domain OR family_primary NOT IN (SELECT domain FROM {from})"
        )
    } else {
        "true".to_string()
    })
}

/// A targets table stored in one Parquet file, as a relation.
pub fn parquet_relation(parquet: &Path) -> String {
    format!("read_parquet({})", quote_literal(&parquet.to_string_lossy()))
}

/// The select of the targets rows with `listed`, from a relation (a Parquet file, or a
/// table stored by reference), in the lists' order.
fn targets_select(conn: &Connection, from: &str) -> Result<String, ServeError> {
    Ok(format!("SELECT *, ({}) AS listed FROM {from} ORDER BY {LIST_ORDER}", listed(conn, from)?))
}

/// The view over the stored files themselves, with the copy's columns, when no copy can be made.
pub fn parquet_view(conn: &Connection, from: &str) -> Result<String, ServeError> {
    Ok(format!("CREATE VIEW targets AS {};\n", targets_select(conn, from)?))
}

/// Writes the copy of a targets table (a relation over its Parquet files) into a new
/// DuckDB file at `out` (table `targets`).
pub fn build(from: &str, out: &Path) -> Result<(), ServeError> {
    let conn = Connection::open(out).map_err(sql_error)?;
    let select = targets_select(&conn, from)?;
    // Sorting a million rows with their lists held 3.4 GB unbounded; DuckDB spills past its limit.
    conn.execute_batch(&format!(
        "SET TimeZone = 'UTC'; SET memory_limit = '{BUILD_MEMORY}'; CREATE TABLE targets AS {select}; CHECKPOINT;"
    ))
    .map_err(sql_error)?;
    conn.close().map_err(|(_, e)| sql_error(e))
}

/// The statements that make `targets` read the copy at `copy`.
pub fn attach(copy: &Path) -> String {
    format!(
        "ATTACH {} AS serving (READ_ONLY);\nCREATE VIEW targets AS SELECT * FROM serving.targets;\n",
        quote_literal(&copy.to_string_lossy())
    )
}

/// The copy of a snapshot's targets (`entry`, read on this machine through the relation
/// `from`) in `cache_dir/serving/<store>/`, built when it is not there yet.
pub fn copy_for(
    store_url: &str,
    manifest: &Manifest,
    entry: &FileEntry,
    from: &str,
    cache_dir: &Path,
) -> Result<PathBuf, ServeError> {
    use sha2::Digest as _;
    let store: String = sha2::Sha256::digest(store_url.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
    let folder = cache_dir.join("serving").join(store);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Io { path, source }
    };
    let name = format!("targets-{}-g{}-{}-v{FORMAT}.duckdb", manifest.date, manifest.generation, entry.bytes);
    let copy = folder.join(&name);
    if copy.is_file() {
        return Ok(copy);
    }
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let partial = folder.join(format!("{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let built = build(from, &partial);
    if let Err(e) = built {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &copy).map_err(io(&copy))?;
    // Older snapshots' copies are not read again (a process that has one open keeps it
    // until it closes); a partial copy is a build that died, unless it is still young.
    let day_old = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 86_400))
    };
    if let Ok(entries) = std::fs::read_dir(&folder) {
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let file = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let stale = (file.ends_with(".duckdb") && file != name) || (file.contains(".partial-") && day_old(&path));
            if stale {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::audience::{Audience, Members, scoped_view};

    #[test]
    fn the_copy_lists_one_row_per_account_in_the_lists_order_and_a_scope_lists_again() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = dir.path().join("targets.parquet");
        // a.com carries a family with b.com; d.com's primary (gone.com) is not a target.
        let setup = Connection::open_in_memory().unwrap();
        setup
            .execute_batch(&format!(
                "COPY (SELECT * FROM (VALUES
                    ('b.com', 90, 5.0, 'a.com'), ('a.com', 80, 9.0, 'a.com'), ('c.com', 80, 9.0, NULL),
                    ('d.com', 95, NULL, 'gone.com'), ('e.com', 80, 12.0, NULL))
                    AS t(domain, icp_score, sw_monthly_visits, family_primary)) TO {} (FORMAT parquet)",
                quote_literal(&parquet.to_string_lossy())
            ))
            .unwrap();
        let copy = dir.path().join("targets.duckdb");
        build(&parquet_relation(&parquet), &copy).unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&attach(&copy)).unwrap();
        let rows = |sql: &str| -> Vec<(String, bool)> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
        };
        // Best score first, then traffic (nulls last), then domain; b.com is under its primary.
        let all = rows("SELECT domain, listed FROM targets");
        let expected = [("d.com", true), ("b.com", false), ("e.com", true), ("a.com", true), ("c.com", true)];
        assert_eq!(all, expected.map(|(d, l)| (d.to_string(), l)));
        // An audience that sees b.com but not its primary lists b.com.
        conn.execute_batch(
            "CREATE SCHEMA scoped; CREATE TABLE scoped.audience_domains AS SELECT 'b.com' AS domain UNION ALL SELECT 'c.com';",
        )
        .unwrap();
        let audience = Audience {
            id: "x".into(),
            name: "X".into(),
            kind: "group",
            role: crate::config::alerts::Role::Admin,
            members: Members::Territories(Vec::new()),
            feeds: Vec::new(),
        };
        let columns: Vec<String> =
            ["domain", "icp_score", "sw_monthly_visits", "family_primary", "listed"].map(String::from).to_vec();
        conn.execute_batch(&scoped_view(&audience, "targets", &columns)).unwrap();
        let scoped = rows("SELECT domain, listed FROM scoped.targets ORDER BY domain");
        assert_eq!(scoped, [("b.com".to_string(), true), ("c.com".to_string(), true)]);
    }
}
