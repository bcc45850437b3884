//! Running a step over a stream of records: the [`driver`] (input order,
//! bounded concurrency, error records passed through, exit codes), what the
//! CI host is told ([`ci_host`]), where a build came from ([`source`]), and
//! progress on stderr.

pub mod ci_host;
pub mod driver;
pub mod progress;
pub mod source;
