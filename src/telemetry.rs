//! What a store reports through the `metrics` facade (feature `metrics`), to whichever
//! recorder the application installed (Prometheus, StatsD, ...). Without the feature every
//! function here is empty and reads no clock.
//!
//! - Latencies, as they happen: `idemdb_begin_duration_seconds` (label `outcome`:
//!   `execute`, `replay`, `conflict`, `in_progress`, `abandoned`, `error`) and
//!   `idemdb_claim_end_duration_seconds` (labels `op`: `complete`, `release`, `abandon`,
//!   `extend_lease`, `detach`; `result`: `ok`, `error`).
//! - The [`Stats`] counters as `idemdb_<name>_total` counters, and what the store holds now
//!   (`unfolded_records`, `journal_bytes_used`, `generations`, `in_flight_here`) as
//!   `idemdb_<name>` gauges: published by every `Store::stats` call and after every pass
//!   of the background sweeper.

use crate::stats::Stats;

/// The clock reading at the start of a timed call.
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Timer {
    /// Starts timing a call.
    pub(crate) fn start() -> Timer {
        Timer {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// A `begin` answered `outcome`.
    pub(crate) fn begin(self, outcome: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::histogram!("idemdb_begin_duration_seconds", "outcome" => outcome)
            .record(self.started.elapsed());
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }

    /// A claim's `op` ended, successfully or not.
    pub(crate) fn claim_end(self, op: &'static str, ok: bool) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(
            "idemdb_claim_end_duration_seconds",
            "op" => op,
            "result" => if ok { "ok" } else { "error" }
        )
        .record(self.started.elapsed());
        #[cfg(not(feature = "metrics"))]
        let _ = (op, ok);
    }
}

/// Publishes `stats`: counters as totals, the rest as gauges. `in_flight_here` is left out
/// when the caller cannot know it (`None`).
pub(crate) fn publish(stats: &Stats, in_flight_here: Option<u64>) {
    #[cfg(feature = "metrics")]
    {
        let totals = [
            ("idemdb_executes_total", stats.executes),
            ("idemdb_recoveries_total", stats.recoveries),
            ("idemdb_replays_total", stats.replays),
            ("idemdb_conflicts_total", stats.conflicts),
            ("idemdb_in_progress_total", stats.in_progress),
            ("idemdb_abandoned_total", stats.abandoned),
            ("idemdb_completes_total", stats.completes),
            ("idemdb_releases_total", stats.releases),
            ("idemdb_abandons_total", stats.abandons),
            ("idemdb_sweeps_total", stats.sweeps),
            ("idemdb_expired_swept_total", stats.expired_swept),
            ("idemdb_commits_total", stats.commits),
            ("idemdb_committed_ops_total", stats.committed_ops),
            ("idemdb_failed_commits_total", stats.failed_commits),
            ("idemdb_reopens_total", stats.reopens),
            ("idemdb_folds_total", stats.folds),
            ("idemdb_folded_records_total", stats.folded_records),
            ("idemdb_failed_folds_total", stats.failed_folds),
        ];
        for (name, value) in totals {
            metrics::counter!(name).absolute(value);
        }
        let gauges = [
            ("idemdb_largest_batch", stats.largest_batch),
            ("idemdb_unfolded_records", stats.unfolded_records),
            ("idemdb_journal_bytes_used", stats.journal_bytes_used),
            ("idemdb_generations", stats.generations),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name).set(value as f64);
        }
        if let Some(here) = in_flight_here {
            metrics::gauge!("idemdb_in_flight_here").set(here as f64);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (stats, in_flight_here);
}
