//! Giving memory back after a burst: an engine thread that has stayed idle for a while after
//! its last work hands the heap that work freed back to the OS, once per idle spell, so the
//! server's resident memory returns to its baseline instead of staying at its peak.

use std::time::{Duration, Instant};

/// When the next release of freed heap memory is due.
#[derive(Debug)]
pub struct IdleRelease {
    after: Option<Duration>,
    due: Option<Instant>,
}

impl IdleRelease {
    /// Releases `after` this long without work (never, if `None`).
    pub fn new(after: Option<Duration>) -> Self {
        Self { after, due: None }
    }

    /// Notes that work just finished: a release falls due `after` from `now`.
    pub fn worked(&mut self, now: Instant) {
        self.due = self.after.map(|a| now + a);
    }

    /// Makes a release due at once (something large was just freed while idle).
    pub fn freed(&mut self, now: Instant) {
        if self.after.is_some() {
            self.due = Some(now);
        }
    }

    /// When a pending release falls due, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Releases freed memory if a release is due by `now`; true if it ran.
    pub fn release_if_due(&mut self, now: Instant) -> bool {
        if self.due.is_none_or(|d| now < d) {
            return false;
        }
        self.due = None;
        let released = kiln_kernels::memory::release_free_memory();
        tracing::debug!(released, "idle: returned freed heap memory to the OS");
        true
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_falls_due_once_per_idle_spell() {
        let t0 = Instant::now();
        let mut idle = IdleRelease::new(Some(Duration::from_secs(5)));
        assert_eq!(idle.due(), None);
        idle.worked(t0);
        assert_eq!(idle.due(), Some(t0 + Duration::from_secs(5)));
        assert!(!idle.release_if_due(t0 + Duration::from_secs(4)));
        assert!(idle.release_if_due(t0 + Duration::from_secs(5)));
        assert_eq!(idle.due(), None);
        assert!(!idle.release_if_due(t0 + Duration::from_secs(60)));
        idle.freed(t0);
        assert!(idle.release_if_due(t0));
    }

    #[test]
    fn never_due_when_turned_off() {
        let t0 = Instant::now();
        let mut idle = IdleRelease::new(None);
        idle.worked(t0);
        idle.freed(t0);
        assert_eq!(idle.due(), None);
        assert!(!idle.release_if_due(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(t1), None), Some(t1));
        assert_eq!(earliest(None, Some(t0)), Some(t0));
        assert_eq!(earliest(Some(t1), Some(t0)), Some(t0));
    }
}
