//! A token bucket: calls may start at `rate` per second on average, `burst` at once.
//!
//! The bucket holds up to `burst` tokens and refills continuously at `rate` per second
//! (Turner's token bucket, as in RFC 2697's committed burst). Each call takes one token; a call
//! that finds none is refused with `ResourceExhausted`, unprocessed.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use futures::future::{Either, Ready};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{Request, Response, Status};

/// Limits the rate at which calls start, with one bucket shared by the services it makes.
#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<Bucket>>,
    rate: f64,
    burst: f64,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimitLayer {
    /// Calls start at `per_second` on average, `burst` at once at most (at least 1). A
    /// non-positive or non-finite rate refills nothing: only the burst is ever allowed.
    pub fn new(per_second: f64, burst: u32) -> RateLimitLayer {
        let burst = f64::from(burst.max(1));
        let rate = if per_second.is_finite() && per_second > 0.0 { per_second } else { 0.0 };
        RateLimitLayer { bucket: Arc::new(Mutex::new(Bucket { tokens: burst, refilled: Instant::now() })), rate, burst }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, limit: self.clone() }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").field("per_second", &self.rate).field("burst", &self.burst).finish()
    }
}

impl RateLimitLayer {
    /// Takes a token if there is one.
    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.saturating_duration_since(bucket.refilled).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A service whose calls start at a limited rate; see [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limit: RateLimitLayer,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Status>,
{
    type Response = Response;
    type Error = Status;
    type Future = Either<S::Future, Ready<Result<Response, Status>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.limit.take() {
            return Either::Left(self.inner.call(req));
        }
        let status = Status::resource_exhausted(format!(
            "{} refused: over the rate limit of {}/s (burst {})",
            req.method(),
            self.limit.rate,
            self.limit.burst
        ));
        Either::Right(futures::future::ready(Err(status.mark_unprocessed())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tower::ServiceExt;

    use super::*;
    use crate::Code;

    fn echo() -> impl Service<Request, Response = Response, Error = Status> + Clone {
        tower::service_fn(|_: Request| futures::future::ready(Ok::<_, Status>(Response::default())))
    }

    async fn admitted(
        service: &RateLimit<impl Service<Request, Response = Response, Error = Status> + Clone>,
        n: usize,
    ) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            match service.clone().oneshot(Request::new("Svc.m", Bytes::new())).await {
                Ok(_) => ok += 1,
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    assert!(status.is_unprocessed());
                }
            }
        }
        ok
    }

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_the_rate() {
        let limited = RateLimitLayer::new(10.0, 3).layer(echo());
        assert_eq!(admitted(&limited, 5).await, 3, "the burst");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(admitted(&limited, 5).await, 1, "one token per 100 ms at 10/s");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(admitted(&limited, 5).await, 3, "refills up to the burst, not beyond");
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_bucket_and_bad_rates_allow_only_the_burst() {
        let limited = RateLimitLayer::new(f64::NAN, 2).layer(echo());
        let twin = limited.clone();
        assert_eq!(admitted(&limited, 1).await + admitted(&twin, 3).await, 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(admitted(&limited, 3).await, 0);
    }
}
