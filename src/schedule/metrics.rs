//! The daemon's (and a one-off run's) metrics, in the Prometheus / OpenMetrics text
//! format through `prometheus-client`: job executions and their outcomes, last
//! success and next fire time per job, runs by status, calls, failures and spend by
//! provider, call latency and rate-limit waits by provider and endpoint (from the
//! committed snapshot's ledger), failed calls by module.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::run::history::End;

type Labels = Vec<(String, String)>;
type Seconds = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn duration_buckets() -> Histogram {
    // 1 s … ~4.5 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub struct Metrics {
    registry: Registry,
    job_executions: Family<Labels, Counter>,
    job_running: Family<Labels, Gauge>,
    job_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    job_next_fire: Family<Labels, Gauge<f64, AtomicU64>>,
    job_duration: Seconds,
    runs: Family<Labels, Counter>,
    calls: Family<Labels, Counter>,
    failed_calls: Family<Labels, Counter>,
    spend: Family<Labels, Counter<f64, AtomicU64>>,
    module_failures: Family<Labels, Counter>,
    module_runs: Family<Labels, Counter>,
    circuit_state: Family<Labels, Gauge>,
    circuit_opened: Family<Labels, Counter>,
    call_latency: Seconds,
    limiter_wait: Seconds,
    last_run_success: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("partnerforge");
        let m = Self {
            job_executions: Family::default(),
            job_running: Family::default(),
            job_last_success: Family::default(),
            job_next_fire: Family::default(),
            job_duration: Family::new_with_constructor(duration_buckets),
            runs: Family::default(),
            calls: Family::default(),
            failed_calls: Family::default(),
            spend: Family::default(),
            module_failures: Family::default(),
            module_runs: Family::default(),
            circuit_state: Family::default(),
            circuit_opened: Family::default(),
            call_latency: Family::new_with_constructor(latency_buckets),
            limiter_wait: Family::new_with_constructor(latency_buckets),
            last_run_success: Family::default(),
            registry: Registry::default(),
        };
        registry.register("job_executions", "Job executions by job and outcome", m.job_executions.clone());
        registry.register("job_running", "Whether the job is running now", m.job_running.clone());
        registry.register(
            "job_last_success_timestamp_seconds",
            "When the job's last successful execution started (Unix time)",
            m.job_last_success.clone(),
        );
        registry.register(
            "job_next_fire_timestamp_seconds",
            "The job's next cron fire time (Unix time)",
            m.job_next_fire.clone(),
        );
        registry.register("job_duration_seconds", "How long job executions took", m.job_duration.clone());
        registry.register("runs", "Runs by pipeline and status", m.runs.clone());
        registry.register("provider_calls", "Provider calls answered, by provider", m.calls.clone());
        registry.register("provider_failed_calls", "Provider calls that failed, by provider", m.failed_calls.clone());
        registry.register("provider_spend_usd", "Spend on provider calls, by provider", m.spend.clone());
        registry.register("module_failed_calls", "Failed calls by the module they fed", m.module_failures.clone());
        registry.register(
            "module_executions",
            "Module executions of runs by module and status (completed; partial: some calls failed or were \
             skipped; failed: every call failed; skipped: no call was made)",
            m.module_runs.clone(),
        );
        registry.register(
            "circuit_state",
            "Each provider's circuit breaker as the last run left it (1 for its state)",
            m.circuit_state.clone(),
        );
        registry.register("circuit_opened", "Times a provider's circuit breaker opened", m.circuit_opened.clone());
        registry.register(
            "call_latency_seconds",
            "Provider call latency by provider and endpoint",
            m.call_latency.clone(),
        );
        registry.register(
            "limiter_wait_seconds",
            "Time calls waited for the rate limiter and backoff, by provider",
            m.limiter_wait.clone(),
        );
        registry.register(
            "run_last_success_timestamp_seconds",
            "When the pipeline's last committed run ended (Unix time)",
            m.last_run_success.clone(),
        );
        Self { registry, ..m }
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn job_started(&self, job: &str) {
        self.job_running.get_or_create(&labels(&[("job", job)])).set(1);
    }

    pub fn job_ended(&self, job: &str, outcome: &str, seconds: f64, started_unix: f64, success: bool) {
        self.job_running.get_or_create(&labels(&[("job", job)])).set(0);
        self.job_executions.get_or_create(&labels(&[("job", job), ("outcome", outcome)])).inc();
        self.job_duration.get_or_create(&labels(&[("job", job)])).observe(seconds);
        if success {
            self.job_last_success.get_or_create(&labels(&[("job", job)])).set(started_unix);
        }
    }

    pub fn last_success(&self, job: &str, started_unix: f64) {
        self.job_last_success.get_or_create(&labels(&[("job", job)])).set(started_unix);
    }

    pub fn next_fire(&self, job: &str, unix: f64) {
        self.job_next_fire.get_or_create(&labels(&[("job", job)])).set(unix);
    }

    /// A run's end record: its status, and per provider its calls, failures and spend.
    pub fn record_run(&self, pipeline: &str, end: &End) {
        self.runs.get_or_create(&labels(&[("pipeline", pipeline), ("status", &end.status)])).inc();
        for (provider, p) in &end.providers {
            let l = labels(&[("provider", provider)]);
            self.calls.get_or_create(&l).inc_by(p.calls);
            self.failed_calls.get_or_create(&l).inc_by(p.failed);
            self.spend.get_or_create(&l).inc_by(p.spend_usd);
        }
        for (module, n) in &end.failed_modules {
            self.module_failures.get_or_create(&labels(&[("module", module)])).inc_by(*n);
        }
        let modules: std::collections::BTreeSet<&String> =
            end.modules_completed.iter().chain(end.failed_modules.keys()).chain(end.skipped_modules.keys()).collect();
        for module in modules {
            let answered = end.modules_completed.contains(module);
            let status =
                match (answered, end.failed_modules.contains_key(module), end.skipped_modules.contains_key(module)) {
                    (true, false, false) => "completed",
                    (true, _, _) => "partial",
                    (false, true, _) => "failed",
                    (false, false, _) => "skipped",
                };
            self.module_runs.get_or_create(&labels(&[("module", module), ("status", status)])).inc();
        }
        for (provider, circuit) in &end.circuits {
            for state in ["closed", "open", "half-open"] {
                let on = i64::from(circuit.state == state);
                self.circuit_state.get_or_create(&labels(&[("provider", provider), ("state", state)])).set(on);
            }
            self.circuit_opened.get_or_create(&labels(&[("provider", provider)])).inc_by(circuit.opened);
        }
        if matches!(end.status.as_str(), "completed" | "partial")
            && let Ok(t) = chrono::DateTime::parse_from_rfc3339(&end.ended_at)
        {
            self.last_run_success.get_or_create(&labels(&[("pipeline", pipeline)])).set(t.timestamp() as f64);
        }
    }

    /// One ledger row: a call's latency and its wait for the limiter and backoff.
    pub fn record_call(&self, provider: &str, endpoint: &str, latency_ms: Option<f64>, waited_ms: Option<f64>) {
        if let Some(ms) = latency_ms {
            self.call_latency
                .get_or_create(&labels(&[("provider", provider), ("endpoint", endpoint)]))
                .observe(ms / 1e3);
        }
        if let Some(ms) = waited_ms {
            self.limiter_wait.get_or_create(&labels(&[("provider", provider)])).observe(ms / 1e3);
        }
    }

    /// Every row of a committed snapshot's ledger (`api_calls`).
    pub fn record_ledger(&self, bytes: bytes::Bytes) -> anyhow::Result<()> {
        use arrow::array::{Array, Float64Array, StringArray};
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            let text =
                |n: &str| batch.column_by_name(n).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let float =
                |n: &str| batch.column_by_name(n).and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned());
            let (Some(provider), Some(endpoint)) = (text("provider"), text("endpoint")) else { continue };
            let (latency, waited) = (float("latency_ms"), float("waited_ms"));
            let value = |a: &Option<Float64Array>, i: usize| a.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i));
            for i in 0..batch.num_rows() {
                self.record_call(provider.value(i), endpoint.value(i), value(&latency, i), value(&waited, i));
            }
        }
        Ok(())
    }
}
