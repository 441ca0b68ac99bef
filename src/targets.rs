//! The book: target domains, the exclusion list and the ticker map, read from
//! the seed CSV files.
//!
//! Domains are normalized (lower case, no scheme, no `www.`, no path or port,
//! no trailing dot, IDN to punycode) so that every later join is on one
//! spelling. A malformed or duplicate row is reported with its file and line
//! and skipped; the run goes on with the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ProviderId;

/// A row of the book that could not be used, with where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: csv::Error },
    #[error("{path}: missing column {column:?} in the header (found: {found})")]
    MissingColumn { path: PathBuf, column: String, found: String },
}

/// Normalizes a domain as typed by a person or a provider: `HTTPS://www.Shop.Example.com./path`
/// becomes `shop.example.com`. Returns why when the text is not a domain.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let mut text = raw.trim();
    if text.is_empty() {
        return Err("empty domain".into());
    }
    if let Some(pos) = text.find("://") {
        text = &text[pos + 3..];
    }
    // Drop credentials, path, query, fragment and port.
    if let Some(pos) = text.rfind('@') {
        text = &text[pos + 1..];
    }
    let end = text.find(['/', '?', '#']).unwrap_or(text.len());
    text = &text[..end];
    if let Some(pos) = text.rfind(':') {
        let port = &text[pos + 1..];
        if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            text = &text[..pos];
        }
    }
    let text = text.trim_end_matches('.');
    let ascii = idna::domain_to_ascii(text).map_err(|_| format!("{raw:?} is not a valid domain name"))?;
    let ascii = ascii.strip_prefix("www.").unwrap_or(&ascii).to_string();
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("{raw:?} has no top-level domain"));
    }
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(format!("{raw:?} is not a valid domain name"));
        }
    }
    if ascii.len() > 253 {
        return Err(format!("{raw:?} is longer than 253 characters"));
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{raw:?} is an address, not a domain"));
    }
    Ok(ascii)
}

/// One target of the book as the seed gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub domain: String,
    pub company_name: Option<String>,
    pub partner_tech: Option<String>,
    pub vertical: Option<String>,
    pub country: Option<String>,
}

/// What the seed files hold, after normalization, plus every row that was skipped.
#[derive(Debug, Default)]
pub struct Book {
    /// Targets in file order, unique by domain.
    pub targets: Vec<Target>,
    pub customers: BTreeSet<String>,
    pub tickers: BTreeMap<String, String>,
    /// Where a company posts its jobs: (platform, board name).
    pub job_boards: BTreeMap<String, (ProviderId, String)>,
    /// A company's news feed URL (RSS or Atom).
    pub news_feeds: BTreeMap<String, String>,
    pub rejected: Vec<RejectedRow>,
}

impl Book {
    /// Moves renamed domains (old → new) to their new names: a target is looked up under
    /// its new domain with its ticker, job board and news feed (or dropped, when the book
    /// already holds the new domain); a customer's new domain is a customer too. Returns
    /// the renames applied to targets.
    pub fn rename(&mut self, renames: &BTreeMap<String, String>) -> Vec<(String, String)> {
        for (old, new) in renames {
            if self.customers.contains(old) {
                self.customers.insert(new.clone());
            }
        }
        let mut present: BTreeSet<String> = self.targets.iter().map(|t| t.domain.clone()).collect();
        let mut applied = Vec::new();
        self.targets.retain_mut(|target| {
            let Some(new) = renames.get(&target.domain) else { return true };
            let old = std::mem::replace(&mut target.domain, new.clone());
            applied.push((old, new.clone()));
            present.insert(new.clone())
        });
        for (old, new) in &applied {
            if let Some(ticker) = self.tickers.remove(old) {
                self.tickers.entry(new.clone()).or_insert(ticker);
            }
            if let Some(board) = self.job_boards.remove(old) {
                self.job_boards.entry(new.clone()).or_insert(board);
            }
            if let Some(feed) = self.news_feeds.remove(old) {
                self.news_feeds.entry(new.clone()).or_insert(feed);
            }
        }
        applied
    }

    pub fn load(targets: &Path, customers: &Path, tickers: &Path) -> Result<Self, SeedError> {
        let mut book = Book::default();
        let mut seen = BTreeMap::new();
        for row in read_rows(targets, &["domain"], &["company_name", "partner_tech", "vertical", "country"])? {
            let row = match row {
                Ok(row) => row,
                Err(rejected) => {
                    book.rejected.push(rejected);
                    continue;
                }
            };
            let domain = match normalize_domain(&row.values[0]) {
                Ok(domain) => domain,
                Err(reason) => {
                    book.rejected.push(row.reject(reason));
                    continue;
                }
            };
            if let Some(first) = seen.get(&domain) {
                book.rejected.push(row.reject(format!("duplicate of line {first} ({domain})")));
                continue;
            }
            seen.insert(domain.clone(), row.line);
            let optional = |i: usize| Some(row.values[i].trim().to_string()).filter(|v| !v.is_empty());
            book.targets.push(Target {
                domain,
                company_name: optional(1),
                partner_tech: optional(2),
                vertical: optional(3),
                country: optional(4),
            });
        }
        for row in read_rows(customers, &["domain"], &[])? {
            match row.and_then(|row| normalize_domain(&row.values[0]).map_err(|reason| row.reject(reason))) {
                Ok(domain) => {
                    book.customers.insert(domain);
                }
                Err(rejected) => book.rejected.push(rejected),
            }
        }
        for row in read_rows(tickers, &["domain", "ticker"], &[])? {
            let row = match row {
                Ok(row) => row,
                Err(rejected) => {
                    book.rejected.push(rejected);
                    continue;
                }
            };
            let ticker = row.values[1].trim().to_ascii_uppercase();
            let valid_ticker = !ticker.is_empty()
                && ticker.len() <= 12
                && ticker.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.^=".contains(&b));
            match normalize_domain(&row.values[0]) {
                Err(reason) => book.rejected.push(row.reject(reason)),
                Ok(_) if !valid_ticker => {
                    book.rejected.push(row.reject(format!("{:?} is not a ticker symbol", row.values[1])))
                }
                Ok(domain) if book.tickers.contains_key(&domain) => {
                    book.rejected.push(row.reject(format!("duplicate ticker row for {domain}")))
                }
                Ok(domain) => {
                    book.tickers.insert(domain, ticker);
                }
            }
        }
        Ok(book)
    }

    /// Reads `domain, feed_url` rows (http or https URLs).
    pub fn load_news_feeds(&mut self, path: &Path) -> Result<(), SeedError> {
        for row in read_rows(path, &["domain", "feed_url"], &[])? {
            let row = match row {
                Ok(row) => row,
                Err(rejected) => {
                    self.rejected.push(rejected);
                    continue;
                }
            };
            let feed = row.values[1].trim();
            let valid = url::Url::parse(feed)
                .is_ok_and(|u| (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some());
            match normalize_domain(&row.values[0]) {
                Err(reason) => self.rejected.push(row.reject(reason)),
                Ok(_) if !valid => self.rejected.push(row.reject(format!("{feed:?} is not an http(s) URL"))),
                Ok(domain) => {
                    self.news_feeds.insert(domain, feed.to_string());
                }
            }
        }
        Ok(())
    }

    /// Reads `domain, platform, board` rows (platform: greenhouse, lever or ashby).
    pub fn load_job_boards(&mut self, path: &Path) -> Result<(), SeedError> {
        for row in read_rows(path, &["domain", "platform", "board"], &[])? {
            let row = match row {
                Ok(row) => row,
                Err(rejected) => {
                    self.rejected.push(rejected);
                    continue;
                }
            };
            let platform = row.values[1].trim().to_ascii_lowercase();
            let board = row.values[2].trim();
            let valid_board = !board.is_empty()
                && board.len() <= 100
                && board.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            match (normalize_domain(&row.values[0]), ProviderId::from_name(&platform)) {
                (Err(reason), _) => self.rejected.push(row.reject(reason)),
                (_, Some(id @ (ProviderId::Greenhouse | ProviderId::Lever | ProviderId::Ashby))) if valid_board => {
                    let domain = normalize_domain(&row.values[0]).unwrap_or_default();
                    if self.job_boards.insert(domain.clone(), (id, board.to_string())).is_some() {
                        self.rejected
                            .push(row.reject(format!("a second job board for {domain}; the last one is used")));
                    }
                }
                (_, Some(ProviderId::Greenhouse | ProviderId::Lever | ProviderId::Ashby)) => {
                    self.rejected.push(row.reject(format!("{board:?} is not a board name")))
                }
                _ => self
                    .rejected
                    .push(row.reject(format!("{platform:?} is not a job board (greenhouse, lever, ashby)"))),
            }
        }
        Ok(())
    }
}

struct SeedRow {
    file: PathBuf,
    line: u64,
    /// Required columns first, then optional ones (empty when absent).
    values: Vec<String>,
}

impl SeedRow {
    fn reject(&self, reason: String) -> RejectedRow {
        RejectedRow { file: self.file.clone(), line: self.line, reason }
    }
}

/// Reads a CSV with a header, picking columns by name. A row that cannot be read
/// (wrong field count, bad UTF-8) comes back as a rejected row, not an error.
/// The rows of a seed file, read one at a time as the caller takes them (a book
/// of millions of rows is never held twice).
fn read_rows<'p>(
    path: &'p Path,
    required: &[&str],
    optional: &[&str],
) -> Result<impl Iterator<Item = Result<SeedRow, RejectedRow>> + 'p, SeedError> {
    let read_error = |source| SeedError::Read { path: path.to_path_buf(), source };
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(read_error)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(read_error)?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let find = |name: &str| header.iter().position(|h| h == name);
    let mut columns = Vec::new();
    for name in required {
        columns.push(Some(find(name).ok_or_else(|| SeedError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: header.join(", "),
        })?));
    }
    columns.extend(optional.iter().map(|name| find(name)));

    Ok(reader.into_records().map(move |record| match record {
        Ok(record) => {
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let values = columns.iter().map(|c| c.and_then(|c| record.get(c)).unwrap_or("").to_string()).collect();
            Ok(SeedRow { file: path.to_path_buf(), line, values })
        }
        Err(e) => {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            let reason = match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    format!("{len} fields where the header has {expected_len}")
                }
                csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
                _ => e.to_string(),
            };
            Err(RejectedRow { file: path.to_path_buf(), line, reason })
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_ways_people_write_domains() {
        for (raw, want) in [
            ("example.com", "example.com"),
            ("  Example.COM ", "example.com"),
            ("https://www.example.com/path?q=1", "example.com"),
            ("http://shop.example.co.uk:8080/", "shop.example.co.uk"),
            ("www.example.com.", "example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
            ("HTTPS://WWW.Bücher.DE/", "xn--bcher-kva.de"),
            ("user@mail.example.org", "mail.example.org"),
        ] {
            assert_eq!(normalize_domain(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn a_renamed_target_is_looked_up_under_its_new_domain_with_its_ticker() {
        let target = |d: &str| Target {
            domain: d.into(),
            company_name: Some(d.into()),
            partner_tech: None,
            vertical: None,
            country: None,
        };
        let mut book = Book {
            targets: vec![target("a.com"), target("b.com"), target("c.com"), target("old.com")],
            ..Book::default()
        };
        book.tickers.insert("a.com".into(), "AAA".into());
        book.customers.insert("gone.com".into());
        let renames: BTreeMap<String, String> =
            [("a.com", "a2.com"), ("old.com", "b.com"), ("gone.com", "gone2.com"), ("x.com", "y.com")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let applied = book.rename(&renames);
        let moved = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(applied, [moved("a.com", "a2.com"), moved("old.com", "b.com")]);
        let domains: Vec<&str> = book.targets.iter().map(|t| t.domain.as_str()).collect();
        // a.com moved (row kept, with its name); old.com merged into b.com, already in the book.
        assert_eq!(domains, ["a2.com", "b.com", "c.com"]);
        assert_eq!(book.targets[0].company_name.as_deref(), Some("a.com"));
        assert_eq!(book.tickers.get("a2.com").map(String::as_str), Some("AAA"));
        assert!(book.customers.contains("gone2.com"));
    }

    #[test]
    fn rejects_what_is_not_a_domain() {
        for raw in ["", "   ", "localhost", "exa mple.com", "-bad.com", "bad-.com", "a..com", "10.0.0.1", "https://"] {
            assert!(normalize_domain(raw).is_err(), "{raw:?} should be rejected");
        }
    }

    #[test]
    fn reports_bad_and_duplicate_rows_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let targets = dir.path().join("targets.csv");
        std::fs::write(
            &targets,
            "domain,company_name,partner_tech,vertical,country\n\
             www.Alpha.com,Alpha,Shopify Plus,Commerce,US\n\
             not a domain,Bad,,,\n\
             https://alpha.com/,Alpha again,,,\n\
             beta.io,Beta,Contentful,Media\n\
             gamma.de,Gamma,,,DE\n",
        )
        .unwrap();
        let customers = dir.path().join("customers.csv");
        std::fs::write(&customers, "domain\ngamma.de\n???\n").unwrap();
        let tickers = dir.path().join("tickers.csv");
        std::fs::write(&tickers, "domain,ticker\nalpha.com,alph\nbeta.io,BAD TICKER\n").unwrap();

        let book = Book::load(&targets, &customers, &tickers).unwrap();
        let domains: Vec<&str> = book.targets.iter().map(|t| t.domain.as_str()).collect();
        assert_eq!(domains, ["alpha.com", "gamma.de"]);
        assert_eq!(book.targets[1].country.as_deref(), Some("DE"));
        assert_eq!(book.targets[1].partner_tech, None);
        assert!(book.customers.contains("gamma.de"));
        assert_eq!(book.tickers.get("alpha.com").map(String::as_str), Some("ALPH"));

        let lines: Vec<String> = book.rejected.iter().map(|r| r.to_string()).collect();
        let name = |f: &str| dir.path().join(f).display().to_string();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with(&format!("{}:3: ", name("targets.csv"))), "{lines:#?}");
        assert_eq!(lines[1], format!("{}:4: duplicate of line 2 (alpha.com)", name("targets.csv")));
        assert_eq!(lines[2], format!("{}:5: 4 fields where the header has 5", name("targets.csv")));
        assert!(lines[3].starts_with(&format!("{}:3: ", name("customers.csv"))), "{lines:#?}");
        assert!(lines[4].starts_with(&format!("{}:3: ", name("tickers.csv"))), "{lines:#?}");
    }

    #[test]
    fn job_boards_name_their_platform() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job_boards.csv");
        std::fs::write(
            &path,
            "domain,platform,board\nalpha.com,greenhouse,alpha\nbeta.io,workday,beta\ngamma.de,Lever,gamma-de\n",
        )
        .unwrap();
        let mut book = Book::default();
        book.load_job_boards(&path).unwrap();
        assert_eq!(book.job_boards.get("alpha.com"), Some(&(ProviderId::Greenhouse, "alpha".to_string())));
        assert_eq!(book.job_boards.get("gamma.de"), Some(&(ProviderId::Lever, "gamma-de".to_string())));
        assert_eq!(book.rejected.len(), 1);
        assert!(book.rejected[0].to_string().contains(":3: \"workday\" is not a job board"), "{}", book.rejected[0]);
    }

    #[test]
    fn a_missing_column_names_the_file_and_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.csv");
        std::fs::write(&path, "site,name\nexample.com,Example\n").unwrap();
        let err = Book::load(&path, &path, &path).unwrap_err().to_string();
        assert!(err.contains("targets.csv") && err.contains("\"domain\"") && err.contains("site, name"), "{err}");
    }
}
