//! When a scenario's clients stop: at its deadline, or sooner when the run cuts it short (the
//! server passed the memory cap, or died).
//!
//! Every wait of every client goes through [`Stop::run`], so no client outlives its scenario
//! whatever the server does: a write the server never drains, a read it never answers.

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A scenario's end, shared by its clients; clones see the same end.
#[derive(Debug, Clone)]
pub struct Stop {
    deadline: Instant,
    early: CancellationToken,
}

impl Stop {
    /// Stops at `deadline`, or when [`Stop::now`] is called, whichever comes first.
    pub fn at(deadline: Instant) -> Stop {
        Stop { deadline, early: CancellationToken::new() }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Stops every clone now.
    pub fn now(&self) {
        self.early.cancel();
    }

    /// Whether the scenario was cut short by [`Stop::now`].
    pub fn was_cut_short(&self) -> bool {
        self.early.is_cancelled()
    }

    /// Completes when the scenario ends.
    pub async fn wait(&self) {
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => {}
            () = self.early.cancelled() => {}
        }
    }

    /// Runs `work` until it completes (`Some`) or the scenario ends first (`None`, and `work` is
    /// dropped).
    ///
    /// # Cancel safety
    /// When the scenario ends first, `work` is dropped where it stands: pass only futures that
    /// lose nothing when dropped (one `write` or `read` call, a sleep, a tick).
    pub async fn run<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            // The end first, so that work that is ready at the very end is not started anew.
            biased;
            () = self.wait() => None,
            output = work => Some(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_ends_at_the_deadline() {
        let stop = Stop::at(Instant::now() + Duration::from_secs(1));
        assert_eq!(stop.run(tokio::time::sleep(Duration::from_millis(10))).await, Some(()));
        assert_eq!(stop.run(std::future::pending::<()>()).await, None);
        assert_eq!(Instant::now(), stop.deadline());
        assert!(!stop.was_cut_short());
    }

    #[tokio::test(start_paused = true)]
    async fn now_ends_every_clone_before_the_deadline() {
        let start = Instant::now();
        let stop = Stop::at(start + Duration::from_secs(60));
        let clone = stop.clone();
        let waiting = tokio::spawn(async move { clone.run(std::future::pending::<()>()).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.now();
        assert_eq!(waiting.await.ok(), Some(None));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(stop.was_cut_short());
    }
}
