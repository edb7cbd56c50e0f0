//! A bounded FIFO shared by submitters and one consumer thread.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A bounded queue: `push` fails when full or closed, `pop_wait` blocks until work or close.
pub struct BoundedQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// What [`BoundedQueue::pop_wait_until`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<R> {
    /// Items were queued and `take` ran.
    Took(R),
    /// The deadline passed with nothing queued.
    TimedOut,
    /// The queue is closed and empty.
    Closed,
}

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `capacity` items already.
    Full,
    /// The consumer has stopped.
    Closed,
}

impl<T> BoundedQueue<T> {
    /// A queue that holds at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent, so go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `item`, returning the new length, or refuses it.
    pub fn push(&self, item: T) -> Result<usize, (PushError, T)> {
        let mut s = self.lock();
        if s.closed {
            return Err((PushError::Closed, item));
        }
        if s.items.len() >= self.capacity {
            return Err((PushError::Full, item));
        }
        s.items.push_back(item);
        let len = s.items.len();
        drop(s);
        self.ready.notify_one();
        Ok(len)
    }

    /// Blocks until at least one item is queued, then lets `take` drain what it wants.
    /// Returns `None` once the queue is closed and empty.
    pub fn pop_wait<R>(&self, take: impl FnOnce(&mut VecDeque<T>) -> R) -> Option<R> {
        let mut s = self.lock();
        while s.items.is_empty() {
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Some(take(&mut s.items))
    }

    /// Like [`pop_wait`](Self::pop_wait), but gives up at `deadline` (never, if `None`).
    pub fn pop_wait_until<R>(
        &self,
        deadline: Option<Instant>,
        take: impl FnOnce(&mut VecDeque<T>) -> R,
    ) -> Waited<R> {
        let mut s = self.lock();
        while s.items.is_empty() {
            if s.closed {
                return Waited::Closed;
            }
            s = match deadline {
                None => self.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Waited::TimedOut;
                    }
                    self.ready
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        Waited::Took(take(&mut s.items))
    }

    /// Lets `take` drain what it wants without waiting; `None` if nothing is queued.
    pub fn try_take<R>(&self, take: impl FnOnce(&mut VecDeque<T>) -> R) -> Option<R> {
        let mut s = self.lock();
        if s.items.is_empty() {
            return None;
        }
        Some(take(&mut s.items))
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item` for the model `model`, turning a refusal into the engine's error.
    pub fn admit(&self, item: T, model: &str) -> Result<usize, crate::EngineError> {
        self.push(item).map_err(|(why, _)| match why {
            PushError::Full => crate::EngineError::Overloaded {
                model: model.to_string(),
                queued: self.len(),
            },
            PushError::Closed => crate::EngineError::Stopped(model.to_string()),
        })
    }

    /// Refuses further pushes and wakes the consumer; queued items are still handed out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_full_and_after_close() {
        let q = BoundedQueue::new(2);
        assert_eq!(q.push(1).unwrap(), 1);
        assert_eq!(q.push(2).unwrap(), 2);
        assert_eq!(q.push(3).unwrap_err(), (PushError::Full, 3));
        assert_eq!(q.pop_wait(|d| d.pop_front()), Some(Some(1)));
        q.close();
        assert_eq!(q.push(4).unwrap_err(), (PushError::Closed, 4));
        assert_eq!(q.pop_wait(|d| d.pop_front()), Some(Some(2)));
        assert_eq!(q.pop_wait(|d| d.pop_front()), None);
    }

    #[test]
    fn timed_wait_gives_up_at_its_deadline_and_still_takes_items() {
        use std::time::Duration;
        let q = BoundedQueue::new(2);
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            q.pop_wait_until(Some(soon), |d| d.pop_front()),
            Waited::TimedOut
        );
        assert!(Instant::now() >= soon);
        q.push(5).unwrap();
        let later = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(
            q.pop_wait_until(later, |d| d.pop_front()),
            Waited::Took(Some(5))
        );
        q.close();
        assert_eq!(q.pop_wait_until(later, |d| d.pop_front()), Waited::Closed);
    }

    #[test]
    fn consumer_wakes_on_push_from_another_thread() {
        let q = std::sync::Arc::new(BoundedQueue::new(4));
        let q2 = q.clone();
        let consumer = std::thread::spawn(move || q2.pop_wait(|d| d.pop_front()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.push(42).unwrap();
        assert_eq!(consumer.join().unwrap(), Some(Some(42)));
    }
}
