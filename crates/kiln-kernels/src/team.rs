//! The kernel threads: a team whose helpers spin between fork-join jobs instead of sleeping.
//!
//! A batched decode step runs a hundred parallel layers of 50–300 µs each. rayon's idle workers
//! yield and then sleep between them, and waking a sleeping thread on a virtual machine costs
//! tens of microseconds: at 8 SmolLM2 streams 17% of the samples were `sched_yield`, futex
//! waits and wake-ups (perf, 2026-12-02). Here the helpers spin on one atomic between jobs,
//! so a job reaches them without a wake-up; after [`SPIN`] without work they park on a
//! condition variable, so an idle server costs nothing.
//!
//! One job runs at a time. A job started while another runs (a second engine's thread, or a
//! kernel called from inside a task) runs on its caller alone, so nothing waits on the team.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// One fork-join job: `tasks` calls of `f`, handed out by `next`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
}

impl Job<'_> {
    /// Runs tasks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.tasks {
                return;
            }
            (self.f)(i);
        }
    }
}

/// The state the caller and the helpers share.
struct Team {
    /// Twice the jobs started so far, plus one while the latest is open to helpers.
    state: AtomicUsize,
    /// The open job: valid while `state` is odd, for a helper that counted itself in `inside`
    /// and then still saw that state.
    job: AtomicPtr<Job<'static>>,
    /// Helpers that may be reading the job: counted before they check that it is open.
    inside: AtomicUsize,
    /// Whether a caller holds the team.
    busy: AtomicBool,
    /// Whether a helper panicked in the current job.
    panicked: AtomicBool,
    /// Helpers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    /// Guards parking against a missed wake-up.
    lock: Mutex<()>,
    /// Where parked helpers wait for a job.
    wake: Condvar,
    /// Helper threads (the caller of a job is the team's other member).
    helpers: usize,
}

/// The team, its helper threads started on first use.
fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let wanted = crate::parallel::threads().saturating_sub(1);
        let team: &'static Team = Box::leak(Box::new(Team {
            state: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            inside: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            helpers: wanted,
        }));
        for i in 0..wanted {
            // A job waits only for the helpers that join it and its caller works until no
            // task is left, so a helper that failed to start only means less help.
            let _ = std::thread::Builder::new()
                .name(format!("kiln-kernel-{}", i + 1))
                .spawn(move || helper(team));
        }
        team
    })
}

/// Runs `f(0..tasks)`, spread over the caller and the team's helpers, and returns when every
/// call has returned. A panic in a call on this thread continues here once the helpers are
/// out of the job; one on a helper is raised here as a panic of its own.
pub(crate) fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let team = team();
    if tasks <= 1
        || team.helpers == 0
        || team
            .busy
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err()
    {
        return (0..tasks).for_each(f);
    }
    let job = Job {
        f,
        tasks,
        next: AtomicUsize::new(0),
    };
    // Closes the job and waits for the helpers in it, also when `f` panics here, so that no
    // helper reads `job` after this frame is gone.
    struct Close<'t>(&'t Team, usize);
    impl Close<'_> {
        /// Closes the job, waits for the helpers in it and frees the team; says whether a
        /// helper panicked.
        fn close(&self) -> bool {
            let team = self.0;
            team.state.store(self.1 + 1, SeqCst);
            let mut rounds = 0u32;
            while team.inside.load(SeqCst) != 0 {
                // A helper preempted inside the job holds this up: let it run.
                rounds = rounds.wrapping_add(1);
                if rounds.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
            team.job.store(std::ptr::null_mut(), SeqCst);
            let panicked = team.panicked.swap(false, SeqCst);
            team.busy.store(false, SeqCst);
            panicked
        }
    }
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.close();
        }
    }
    team.job
        .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
    let open = team.state.load(SeqCst) + 1;
    team.state.store(open, SeqCst);
    let close = Close(team, open);
    if team.sleepers.load(SeqCst) > 0 {
        let _guard = team.lock.lock().unwrap_or_else(|e| e.into_inner());
        team.wake.notify_all();
    }
    job.work();
    let helper_panicked = close.close();
    std::mem::forget(close);
    assert!(
        !helper_panicked,
        "a kernel task panicked on a helper thread"
    );
}

/// A helper's life: wait for an open job, work on it, repeat.
fn helper(team: &'static Team) {
    let mut seen = 0;
    loop {
        let open = wait_for_job(team, seen);
        seen = open;
        team.inside.fetch_add(1, SeqCst);
        // Counted in `inside` before this check: if the job is still open now, its caller
        // waits for this helper before it returns (it closes `state`, then reads `inside`).
        if team.state.load(SeqCst) == open {
            let job = team.job.load(SeqCst);
            // SAFETY: `job` was stored before `state` became `open` and stays valid until the
            // caller, having closed the job, sees `inside` at zero; this helper is counted
            // there and checked after counting itself that the job was still open.
            let job = unsafe { &*job };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job.work())) {
                // Not dropped: a payload whose drop panics would end this thread while it is
                // still counted in `inside`, and the caller would wait for it forever.
                std::mem::forget(payload);
                team.panicked.store(true, SeqCst);
            }
        }
        team.inside.fetch_sub(1, SeqCst);
    }
}

/// Waits until a job other than `seen` is open and returns its state: spinning for [`SPIN`]
/// (yielding the core now and then, for the server's other threads), then parked.
fn wait_for_job(team: &Team, seen: usize) -> usize {
    let is_new = |s: usize| s % 2 == 1 && s != seen;
    let start = Instant::now();
    let mut rounds = 0u32;
    loop {
        let s = team.state.load(SeqCst);
        if is_new(s) {
            return s;
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(1024) {
            if start.elapsed() > SPIN {
                break;
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    let mut guard = team.lock.lock().unwrap_or_else(|e| e.into_inner());
    team.sleepers.fetch_add(1, SeqCst);
    // Counted as a sleeper before this check: a caller that opens a job after it sees the
    // count and takes the lock to notify, which it gets only once this thread waits.
    let s = loop {
        let s = team.state.load(SeqCst);
        if is_new(s) {
            break s;
        }
        guard = team.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    };
    team.sleepers.fetch_sub(1, SeqCst);
    s
}

#[cfg(test)]
mod tests {
    use super::run;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Runs `tasks` tasks and checks that each ran exactly once.
    fn check_once(tasks: usize) {
        let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        run(tasks, &|i| {
            counts[i].fetch_add(1, Relaxed);
        });
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(c.load(Relaxed), 1, "task {i} of {tasks}");
        }
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for round in 0..500 {
            check_once(round % 37);
        }
    }

    #[test]
    fn a_job_started_inside_a_task_runs_on_its_caller() {
        let total = AtomicUsize::new(0);
        run(8, &|_| {
            run(5, &|j| {
                total.fetch_add(j + 1, Relaxed);
            })
        });
        assert_eq!(total.load(Relaxed), 8 * 15);
    }

    #[test]
    fn callers_on_several_threads_each_get_all_their_tasks() {
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for round in 0..200 {
                        check_once(1 + (round + t) % 29);
                    }
                });
            }
        });
    }

    #[test]
    fn the_helpers_take_tasks() {
        if crate::parallel::threads() < 2 {
            return; // one kernel thread: no helper exists to take any
        }
        // Another test may hold the team (then a job runs on its caller alone): try again.
        let helped = (0..200).any(|_| {
            let ids = Mutex::new(HashSet::new());
            run(16, &|_| {
                std::thread::sleep(std::time::Duration::from_micros(200));
                ids.lock().unwrap().insert(std::thread::current().id());
            });
            let ids = ids.into_inner().unwrap();
            ids.len() > 1
        });
        assert!(helped, "no task ran on a helper in 200 jobs");
    }

    #[cfg(panic = "unwind")]
    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_goes_on() {
        for _ in 0..20 {
            let r = std::panic::catch_unwind(|| {
                run(64, &|i| {
                    if i == 37 {
                        panic!("task 37 fails");
                    }
                })
            });
            assert!(r.is_err(), "the panic reached the caller");
            check_once(64);
        }
    }
}
