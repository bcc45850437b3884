//! What every HTTP client of the tools shares (the registry client, the
//! blob copier, the Azure clients): one retry policy, one reading of
//! `Retry-After`, one rule for when plain HTTP is allowed, and how a
//! transport error is told to a person.
//!
//! Like go-containerregistry's `transport/retry.go`, there is one policy,
//! not one per caller; callers only say which failures are transient.

use std::fmt::Display;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `User-Agent` of every request the tools send.
pub const USER_AGENT: &str = concat!("onestream/", env!("CARGO_PKG_VERSION"));

/// Retries for transient faults: connection errors, timeouts, 429 and 5xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// No retry starts that would begin later than this after the first
    /// try (a server's `Retry-After` included).
    pub budget: Duration,
    /// First backoff; doubled each retry (with jitter) up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// One request to a registry.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            budget: Duration::from_secs(120),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Counts the attempts of one operation, from now.
    pub fn start(self) -> Attempts {
        Attempts {
            policy: self,
            started: Instant::now(),
            attempt: 1,
        }
    }

    /// Exponential backoff with up to 50 % jitter, so parallel clients that
    /// failed together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exponential.min(self.max_delay);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = capped.mul_f64(f64::from(nanos % 500) / 1000.0);
        capped - jitter
    }
}

/// The attempts of one operation under a [`RetryPolicy`].
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    started: Instant,
    attempt: u32,
}

impl Attempts {
    /// The attempt under way, from 1.
    pub fn number(&self) -> u32 {
        self.attempt
    }

    /// After a transient failure (`why`): waits as long as the server
    /// asked (`Retry-After`), or the backoff, and returns true; returns
    /// false at once when the attempts or the time budget are spent.
    pub async fn retry(&mut self, asked: Option<Duration>, why: impl Display) -> bool {
        let delay = asked.unwrap_or_else(|| self.policy.backoff(self.attempt));
        let out_of_time = self.started.elapsed() + delay > self.policy.budget;
        if self.attempt >= self.policy.attempts || out_of_time {
            tracing::debug!(
                attempt = self.attempt,
                "{why}: giving up after transient failures"
            );
            return false;
        }
        tracing::info!("{why}: transient failure, retry {} in {delay:?}", self.attempt);
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        true
    }
}

impl RetryPolicy {
    /// Sends the request `build` makes, again after each transient failure
    /// (a connection error, 429, 5xx; waiting as `Retry-After` asks) until
    /// the policy gives up. The last answer comes back whatever its status;
    /// only a transport failure is an error. For one-shot API calls with
    /// small bodies (Key Vault, Resource Manager); the registry client has
    /// its own loop, which also renews tokens.
    pub async fn send(
        self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut attempts = self.start();
        loop {
            match build().send().await {
                Err(e)
                    if is_transient_error(&e)
                        && attempts.retry(None, format!("{what}: {}", describe(&e))).await => {}
                Err(e) => return Err(e),
                Ok(response) if is_transient_status(response.status()) => {
                    let why = format!("{what}: {}", response.status());
                    if !attempts.retry(retry_after(response.headers()), why).await {
                        return Ok(response);
                    }
                }
                Ok(response) => return Ok(response),
            }
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// 429, 408 and 5xx (but 501, which never heals) are worth another try.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// A refused or reset connection or a timeout is worth another try; a
/// certificate or protocol error never heals by itself.
pub fn is_transient_error(error: &reqwest::Error) -> bool {
    if error.is_timeout() {
        return true;
    }
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | UnexpectedEof
                    | TimedOut
            );
        }
        if current.downcast_ref::<rustls::Error>().is_some() {
            return false;
        }
        source = current.source();
    }
    error.is_connect() || error.is_request()
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a `:port`: the
/// hosts that may speak plain HTTP without being named insecure.
pub fn is_loopback(host: &str) -> bool {
    let named = |name: &str| {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    named(host)
        || matches!(host.rsplit_once(':'),
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && named(name))
}

/// The most useful line of a reqwest error: its innermost cause ("Connection
/// refused", "invalid peer certificate: UnknownIssuer") after its own text.
pub fn describe(error: &reqwest::Error) -> String {
    let mut innermost = None;
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        innermost = Some(current.to_string());
        source = current.source();
    }
    let own = if error.is_connect() {
        "connection failed".to_string()
    } else if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    match innermost {
        Some(cause) if !own.contains(&cause) => format!("{own}: {cause}"),
        _ => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "LOCALHOST",
            "[::1]:5000",
            "[::1]",
            "::1",
            "127.3.2.1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1:5000",
            "example.com",
            "devacr.azurecr.io",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert!(policy.backoff(1) <= Duration::from_millis(200));
        assert!(policy.backoff(3) >= Duration::from_millis(400));
        assert!(policy.backoff(30) <= policy.max_delay);
    }

    #[tokio::test]
    async fn attempts_stop_at_the_count_and_at_the_budget() {
        let mut attempts = RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        }
        .start();
        assert!(attempts.retry(Some(Duration::ZERO), "first").await);
        assert!(attempts.retry(Some(Duration::ZERO), "second").await);
        assert_eq!(attempts.number(), 3);
        assert!(
            !attempts.retry(Some(Duration::ZERO), "third").await,
            "three attempts in all"
        );

        let mut attempts = RetryPolicy::default().start();
        assert!(
            !attempts
                .retry(Some(Duration::from_secs(121)), "asked too long")
                .await,
            "a Retry-After past the budget is not waited for"
        );
    }
}
