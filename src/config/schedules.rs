//! `schedules.toml`: the jobs the daemon (`partnerforge schedule`) runs — when
//! (a cron expression in an IANA time zone, or after another job succeeded), what
//! (a pipeline's run, the exports, the daily digest, gc), and what to do about runs
//! missed while the daemon was down. Checked whole at start: a bad cron, an unknown
//! zone, a missing pipeline or a dependency cycle is one error naming the job and line.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

/// What a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// `partnerforge run --pipeline PIPELINE`.
    Run { pipeline: PathBuf },
    /// `partnerforge export --out OUT --all-audiences` (or one `audience`).
    Export { pipeline: PathBuf, out: PathBuf, audience: Option<String>, queries: PathBuf },
    /// `partnerforge digest`: today's daily digests.
    Digest { pipeline: PathBuf },
    /// `partnerforge deliver`: alerts not delivered yet.
    Deliver { pipeline: PathBuf },
    /// `partnerforge gc`, and the exported sites' old versions when `sites` is given.
    Gc { sites: Option<PathBuf>, keep_daily: usize, keep_monthly: usize },
}

impl Task {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Run { .. } => "run",
            Self::Export { .. } => "export",
            Self::Digest { .. } => "digest",
            Self::Deliver { .. } => "deliver",
            Self::Gc { .. } => "gc",
        }
    }
}

/// Runs missed while the daemon was down: `once` runs a job whose last success is
/// older than one period once at start; `none` waits for its next time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    Once,
    None,
}

/// When a job runs.
#[derive(Debug, Clone)]
pub enum When {
    /// At the times of a cron expression (seconds first: `0 30 2 * * *`) in a time zone.
    Cron { expression: String, cron: Box<croner::Cron>, zone: chrono_tz::Tz },
    /// Each time the named job succeeds.
    After(String),
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub line: usize,
    pub when: When,
    pub catch_up: CatchUp,
    pub task: Task,
    /// More arguments for the command (e.g. `["--providers", "real"]` for a run).
    pub args: Vec<String>,
}

impl Job {
    /// The next `n` fire times after `from` (none for a job that runs after another).
    pub fn next_times(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<chrono_tz::Tz>> {
        let When::Cron { cron, zone, .. } = &self.when else { return Vec::new() };
        // Whole seconds: croner carries the sub-second part of its start into every time.
        let from = chrono::SubsecRound::trunc_subsecs(from, 0);
        cron.iter_after(from.with_timezone(zone)).take(n).collect()
    }

    /// The fire time at or before `at` (the period a catch-up looks back over).
    pub fn previous_time(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let When::Cron { cron, zone, .. } = &self.when else { return None };
        let at = chrono::SubsecRound::trunc_subsecs(at, 0);
        cron.find_previous_occurrence(&at.with_timezone(zone), true).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// Settings of the daemon itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// Where `/health`, `/ready` and `/metrics` are served (loopback by default).
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// How long a running job gets to stop (checkpoint, give the lock back) on SIGTERM.
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_grace() -> u64 {
    60
}

impl Default for Daemon {
    fn default() -> Self {
        Self { listen: default_listen(), stop_grace_secs: default_grace() }
    }
}

#[derive(Debug, Clone)]
pub struct Schedules {
    pub path: PathBuf,
    pub daemon: Daemon,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: String,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default = "utc")]
    time_zone: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default = "once")]
    catch_up: CatchUp,
    /// `run`, `export`, `digest`, `deliver` or `gc`.
    #[serde(default = "kind_run")]
    kind: String,
    #[serde(default)]
    pipeline: Option<PathBuf>,
    #[serde(default)]
    out: Option<PathBuf>,
    #[serde(default)]
    audience: Option<String>,
    /// The export queries (default `queries/export`).
    #[serde(default)]
    queries: Option<PathBuf>,
    #[serde(default)]
    sites: Option<PathBuf>,
    #[serde(default = "thirty")]
    keep_daily: usize,
    #[serde(default = "twenty_four")]
    keep_monthly: usize,
    #[serde(default)]
    args: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}
fn once() -> CatchUp {
    CatchUp::Once
}
fn kind_run() -> String {
    "run".into()
}
fn thirty() -> usize {
    30
}
fn twenty_four() -> usize {
    24
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulesFile {
    #[serde(default)]
    daemon: Option<Daemon>,
    jobs: Vec<Spanned<JobFile>>,
}

/// Parses a cron expression with seconds (six fields, or seven with a year).
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "{expression:?} has {fields} fields: write seconds first (sec min hour day month weekday), e.g. \"0 30 2 * * *\""
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expression)
        .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))
}

impl Schedules {
    /// Loads and checks `schedules.toml`; pipeline and output paths are relative to
    /// the folder the file is in.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (file, text): (SchedulesFile, String) = super::load_toml(path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut jobs: Vec<Job> = Vec::new();
        for spanned in &file.jobs {
            let line = line_of(spanned.span().start);
            let j = spanned.get_ref();
            let invalid = |key: &str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("line {line}: job {:?}: {key}", j.name),
                message,
            };
            if j.name.is_empty() || !j.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid("name", "letters, digits, '-' and '_' only".into()));
            }
            if jobs.iter().any(|other| other.name == j.name) {
                return Err(invalid("name", "another job has this name".into()));
            }
            let zone = chrono_tz::Tz::from_str(&j.time_zone).map_err(|_| {
                invalid("time_zone", format!("{:?} is not an IANA time zone (e.g. Europe/Berlin)", j.time_zone))
            })?;
            let when = match (&j.cron, &j.after) {
                (Some(expression), None) => When::Cron {
                    expression: expression.clone(),
                    cron: Box::new(parse_cron(expression).map_err(|m| invalid("cron", m))?),
                    zone,
                },
                (None, Some(after)) => When::After(after.clone()),
                (Some(_), Some(_)) => return Err(invalid("after", "give either cron or after, not both".into())),
                (None, None) => return Err(invalid("cron", "give a cron expression, or after = \"JOB\"".into())),
            };
            let pipeline = || -> Result<PathBuf, ConfigError> {
                let relative = j.pipeline.clone().unwrap_or_else(|| PathBuf::from("pipelines/nightly.toml"));
                let resolved = base.join(&relative);
                if !resolved.is_file() {
                    return Err(invalid("pipeline", format!("no pipeline file {}", resolved.display())));
                }
                Ok(resolved)
            };
            let task = match j.kind.as_str() {
                "run" => Task::Run { pipeline: pipeline()? },
                "export" => Task::Export {
                    pipeline: pipeline()?,
                    out: base
                        .join(j.out.clone().ok_or_else(|| invalid("out", "an export job names its folder".into()))?),
                    audience: j.audience.clone(),
                    queries: base.join(j.queries.clone().unwrap_or_else(|| PathBuf::from("queries/export"))),
                },
                "digest" => Task::Digest { pipeline: pipeline()? },
                "deliver" => Task::Deliver { pipeline: pipeline()? },
                "gc" => Task::Gc {
                    sites: j.sites.as_ref().map(|s| base.join(s)),
                    keep_daily: j.keep_daily,
                    keep_monthly: j.keep_monthly,
                },
                other => {
                    return Err(invalid("kind", format!("{other:?}: one of run, export, digest, deliver, gc")));
                }
            };
            jobs.push(Job { name: j.name.clone(), line, when, catch_up: j.catch_up, task, args: j.args.clone() });
        }
        // Every `after` names a job, and following them never comes back.
        for job in &jobs {
            let mut seen = vec![job.name.as_str()];
            let mut current = job;
            while let When::After(after) = &current.when {
                let invalid = |message: String| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("line {}: job {:?}: after", job.line, job.name),
                    message,
                };
                let Some(next) = jobs.iter().find(|j| &j.name == after) else {
                    return Err(invalid(format!("no job {after:?}")));
                };
                if seen.contains(&next.name.as_str()) {
                    seen.push(&next.name);
                    return Err(invalid(format!("a dependency cycle: {}", seen.join(" → "))));
                }
                seen.push(&next.name);
                current = next;
            }
        }
        Ok(Self { path: path.to_path_buf(), daemon: file.daemon.unwrap_or_default(), jobs })
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The jobs that run after `name` succeeds.
    pub fn dependents(&self, name: &str) -> Vec<&Job> {
        self.jobs.iter().filter(|j| matches!(&j.when, When::After(a) if a == name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        std::fs::write(dir.join("pipelines/nightly.toml"), "").unwrap();
        let path = dir.join("schedules.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bad_job_is_one_error_naming_the_job_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = |text: &str| Schedules::load(&write(dir.path(), text)).unwrap_err().to_string();
        let e =
            err("[[jobs]]\nname = \"a\"\ncron = \"0 30 2 * * *\"\n\n[[jobs]]\nname = \"b\"\ncron = \"0 61 2 * * *\"\n");
        assert!(e.contains("line 5: job \"b\": cron") && e.contains("not a cron expression"), "{e}");
        let e = err("[[jobs]]\nname = \"a\"\ncron = \"30 2 * * *\"\n");
        assert!(e.contains("has 5 fields: write seconds first"), "{e}");
        let e = err("[[jobs]]\nname = \"a\"\ncron = \"0 30 2 * * *\"\ntime_zone = \"Mars/Olympus\"\n");
        assert!(e.contains("line 1: job \"a\": time_zone") && e.contains("not an IANA time zone"), "{e}");
        let e = err("[[jobs]]\nname = \"a\"\ncron = \"0 30 2 * * *\"\npipeline = \"pipelines/none.toml\"\n");
        assert!(e.contains("job \"a\": pipeline") && e.contains("no pipeline file"), "{e}");
        let e = err(
            "[[jobs]]\nname = \"a\"\nafter = \"b\"\n[[jobs]]\nname = \"b\"\nafter = \"c\"\n[[jobs]]\nname = \"c\"\nafter = \"a\"\n",
        );
        assert!(e.contains("a dependency cycle: a → b → c → a"), "{e}");
        let e = err("[[jobs]]\nname = \"a\"\nafter = \"nightly\"\n");
        assert!(e.contains("no job \"nightly\""), "{e}");
        let e = err("[[jobs]]\nname = \"a\"\ncron = \"0 30 2 * * *\"\nkind = \"dance\"\n");
        assert!(e.contains("one of run, export, digest, deliver, gc"), "{e}");
    }

    #[test]
    fn daylight_saving_neither_skips_nor_doubles_a_nightly_run() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            write(dir.path(), "[[jobs]]\nname = \"n\"\ncron = \"0 30 2 * * *\"\ntime_zone = \"Europe/Berlin\"\n");
        let schedules = Schedules::load(&path).unwrap();
        let job = &schedules.jobs[0];
        let berlin = chrono_tz::Europe::Berlin;
        let days = |from: DateTime<Utc>| -> Vec<String> {
            job.next_times(from, 3).iter().map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string()).collect()
        };
        // Spring forward (2026-03-29, 02:00 → 03:00): 02:30 does not exist; the run happens
        // once that day, at the first valid time after the gap.
        let before = berlin.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap().with_timezone(&Utc);
        let spring = days(before);
        assert_eq!(spring, ["2026-03-29 03:00 CEST", "2026-03-30 02:30 CEST", "2026-03-31 02:30 CEST"]);
        // Fall back (2026-10-25, 03:00 → 02:00): 02:30 happens twice; the run happens once.
        let before = berlin.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap().with_timezone(&Utc);
        let fall = days(before);
        assert_eq!(fall.iter().filter(|d| d.starts_with("2026-10-25")).count(), 1, "{fall:?}");
        assert_eq!(fall, ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET", "2026-10-27 02:30 CET"]);
        // UTC instants: 24 h apart except across the change.
        let gap = job.next_times(before, 2);
        assert_eq!((gap[1].with_timezone(&Utc) - gap[0].with_timezone(&Utc)).num_hours(), 25);
    }
}
