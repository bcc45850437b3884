//! Running a step over a stream of records: the [`driver`] (input order,
//! bounded concurrency, error records passed through, exit codes), what the
//! CI host is told ([`ci_host`]), where a build came from ([`source`]), and
//! progress on stderr.

pub mod ci_host;
pub mod driver;
pub mod progress;
pub mod provenance;
pub mod source;

pub use driver::{RunError, RunOptions, Step, Work};

/// Exit codes, the same for every tool (DESIGN.md's record rule 5); `--help`
/// shows [`exit::TABLE`].
pub mod exit {
    /// Every record succeeded.
    pub const SUCCESS: u8 = 0;
    /// At least one record failed; it was emitted as an error record.
    pub const FAILED: u8 = 1;
    /// Usage error or unreadable input (the message names the line).
    pub const USAGE: u8 = 2;

    /// What each code means, for `--help`.
    pub const TABLE: [(u8, &str); 3] = [
        (SUCCESS, "every record succeeded"),
        (
            FAILED,
            "at least one record failed (it was written out as an error record)",
        ),
        (
            USAGE,
            "usage error or unreadable input (the message names the line)",
        ),
    ];
}

/// The process's async runtime: key loading (Azure Key Vault) and the
/// record stream share it, so the HTTP clients made while loading keys keep
/// their connection pools. A few workers are plenty for I/O-bound work on a
/// CI agent.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}
