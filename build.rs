//! Puts the official prebuilt `libduckdb.so` in place before the final link.
//!
//! DuckDB is linked, never compiled: compiling its C++ takes over an hour on a
//! 2-core machine. `.cargo/config.toml` points `DUCKDB_LIB_DIR` at the
//! git-ignored `.duckdb/lib` of this checkout (an environment variable of the
//! same name wins). When the library is missing there, this script fetches the
//! npm package that ships it (`npm pack`) and unpacks `libduckdb.so` into that
//! folder. It also sets an rpath so the binary, the tests and the benches find
//! the library at run time without `LD_LIBRARY_PATH`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The npm package (and exact release) that ships DuckDB 1.5.6's `libduckdb.so`,
/// matching the pinned `duckdb = "=1.10506.1"` crate.
const PACKAGE: &str = "@duckdb/node-bindings-linux-x64@1.5.6-r.1";
const LIBRARY: &str = "libduckdb.so";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    transform_source_fingerprint();
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");

    let Some(dir) = env::var_os("DUCKDB_LIB_DIR").map(PathBuf::from) else {
        fail("DUCKDB_LIB_DIR is not set; .cargo/config.toml normally sets it to .duckdb/lib");
    };
    let dir = if dir.is_relative() {
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(dir)
    } else {
        dir
    };
    let library = dir.join(LIBRARY);
    println!("cargo:rerun-if-changed={}", library.display());

    if !library.exists()
        && let Err(message) = fetch_library(&dir)
    {
        fail(&message);
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}

/// The code a targets row is computed by — the transforms, the parsing of the scoring
/// model and the signal rules, how carried module rows are read and converted, and the
/// locked dependency versions (Polars) — as one
/// FNV-1a hash, `PARTNERFORGE_TRANSFORM_SOURCE`: a row carried forward from a snapshot
/// that another revision of this code scored is computed again, never reused.
fn transform_source_fingerprint() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files: Vec<PathBuf> = fs::read_dir(root.join("src/transform"))
        .map(|dir| dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "rs")).collect())
        .unwrap_or_default();
    // The carried module rows' conversion too: a night joins only the rows the fetch touched,
    // trusting every other domain's carried rows to read as the stored snapshot's.
    let more =
        ["src/config/scoring.rs", "src/config/signals.rs", "src/freshness.rs", "src/store/table.rs", "Cargo.lock"];
    files.extend(more.map(|f| root.join(f)));
    files.sort();
    println!("cargo:rerun-if-changed={}", root.join("src/transform").display());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file.strip_prefix(&root).unwrap_or(file).to_string_lossy().into_owned();
        for byte in name.bytes().chain(fs::read(file).unwrap_or_default()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=PARTNERFORGE_TRANSFORM_SOURCE={hash:016x}");
}

fn fail(message: &str) -> ! {
    // A build script's panic prints a backtrace hint; a plain message and exit is clearer.
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// `npm pack` the package into a scratch folder, untar it, move the library into `dir`.
fn fetch_library(dir: &Path) -> Result<(), String> {
    let npm_found = Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success());
    if !npm_found {
        return Err(format!(
            "npm is needed once to fetch {LIBRARY} ({PACKAGE}): install it (apt-get install npm), \
             or set DUCKDB_LIB_DIR to a folder that already holds {LIBRARY}"
        ));
    }
    let scratch = dir.join(".download");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;

    let pack = Command::new("npm")
        .args(["pack", "--silent", PACKAGE])
        .current_dir(&scratch)
        .output()
        .map_err(|e| format!("npm pack {PACKAGE} failed to start: {e}"))?;
    if !pack.status.success() {
        return Err(format!("npm pack {PACKAGE} failed: {}", String::from_utf8_lossy(&pack.stderr).trim()));
    }
    let tarball = fs::read_dir(&scratch)
        .map_err(|e| format!("cannot list {}: {e}", scratch.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "tgz"))
        .ok_or_else(|| format!("npm pack {PACKAGE} produced no .tgz in {}", scratch.display()))?;

    let untar = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg(format!("package/{LIBRARY}"))
        .current_dir(&scratch)
        .status()
        .map_err(|e| format!("tar failed to start: {e}"))?;
    if !untar.success() {
        return Err(format!("could not unpack {LIBRARY} from {}", tarball.display()));
    }
    // Move into place last, so an interrupted download never leaves a half library behind.
    fs::rename(scratch.join("package").join(LIBRARY), dir.join(LIBRARY))
        .map_err(|e| format!("cannot move {LIBRARY} into {}: {e}", dir.display()))?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}
