//! Retention: how long the daemon keeps a job after it ended.
//!
//! Every accepted job is kept until it ends: that is the daemon's promise
//! (nothing accepted is ever lost). After its end, a job's record — its
//! result, its error, an exec job's captured output — is kept for clients
//! to read, and by default forever. A daemon that runs for months cannot
//! keep everything, so an operator may bound it, by count
//! (`--retain-jobs N`: the N most recent ends are kept) and by age
//! (`--retain-seconds S`: an end is kept S seconds), or both (whichever
//! lets go first). Both are reloadable.
//!
//! A dropped job leaves the daemon's memory at once and the job log at its
//! next compaction. Its id is never given again (the log's `meta` record
//! keeps the next id), and asking for it answers NOT_FOUND saying that it
//! was dropped; its idempotency key is free again.
//!
//! One thing holds a job past the policy: an unfinished job that lists it
//! in `after`. The dependent's fate is decided when the dependency ends,
//! but after a restart the engine reads the dependency's state again to
//! queue the dependent, so the dependency is *pinned* until every job that
//! depends on it has ended.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The bound an operator sets on ended jobs (part of the reloadable limits).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Policy {
    /// Ended jobs kept at most (the oldest ends go first); `None` keeps all.
    pub max_jobs: Option<usize>,
    /// How long an ended job is kept; `None` keeps it forever.
    pub max_age: Option<Duration>,
}

impl Policy {
    /// Whether the policy keeps every ended job.
    pub fn keeps_all(&self) -> bool {
        self.max_jobs.is_none() && self.max_age.is_none()
    }
}

/// The engine's record of ended jobs, in the order their ends were
/// recorded, and of the jobs pinned by unfinished dependents.
#[derive(Debug, Default)]
pub(crate) struct Retention {
    /// `(finished_at, id)`, oldest end first.
    ended: VecDeque<(f64, u64)>,
    /// Job → how many unfinished jobs list it in `after`.
    pins: HashMap<u64, u32>,
    /// Ended jobs the policy would have let go but that are pinned, with
    /// their ends: they go back to the front of `ended` when unpinned.
    held: HashMap<u64, f64>,
    /// Ended jobs dropped since start.
    dropped: u64,
}

impl Retention {
    /// Unfinished jobs now depend on `deps`.
    pub fn pin(&mut self, deps: &[u64]) {
        for d in deps {
            *self.pins.entry(*d).or_insert(0) += 1;
        }
    }

    /// A job that depended on `deps` has ended.
    pub fn unpin(&mut self, deps: &[u64]) {
        for d in deps {
            if let Some(n) = self.pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    self.pins.remove(d);
                    if let Some(at) = self.held.remove(d) {
                        // Among the oldest ends: the policy decides at once.
                        self.ended.push_front((at, *d));
                    }
                }
            }
        }
    }

    /// Job `id` ended at `at` (Unix seconds).
    pub fn ended(&mut self, id: u64, at: f64) {
        self.ended.push_back((at, id));
    }

    /// The ended jobs `policy` lets go at `now` (Unix seconds), oldest
    /// first; they are no longer tracked. A pinned job is held aside (it
    /// does not count against `max_jobs`) until its dependents end.
    pub fn expire(&mut self, policy: &Policy, now: f64) -> Vec<u64> {
        let mut gone = Vec::new();
        if policy.keeps_all() {
            return gone;
        }
        let max_age = policy.max_age.map(|d| d.as_secs_f64());
        while let Some(&(at, id)) = self.ended.front() {
            let too_many = policy.max_jobs.is_some_and(|n| self.ended.len() > n);
            let too_old = max_age.is_some_and(|age| now - at >= age);
            // Ends are in order: once one is neither, the later ones are not.
            if !too_many && !too_old {
                break;
            }
            self.ended.pop_front();
            if self.pins.contains_key(&id) {
                self.held.insert(id, at);
            } else {
                gone.push(id);
            }
        }
        self.dropped += gone.len() as u64;
        gone
    }

    /// Ended jobs kept now (pinned ones included).
    pub fn kept(&self) -> usize {
        self.ended.len() + self.held.len()
    }

    /// Ended jobs dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(ids: &[(f64, u64)]) -> Retention {
        let mut r = Retention::default();
        for (at, id) in ids {
            r.ended(*id, *at);
        }
        r
    }

    #[test]
    fn the_default_keeps_everything() {
        let mut r = ended(&[(1.0, 1), (2.0, 2)]);
        assert!(Policy::default().keeps_all());
        assert!(r.expire(&Policy::default(), 1e9).is_empty());
        assert_eq!(r.kept(), 2);
    }

    #[test]
    fn a_count_keeps_the_most_recent_ends() {
        let mut r = ended(&[(1.0, 3), (2.0, 1), (3.0, 2)]);
        let policy = Policy {
            max_jobs: Some(1),
            max_age: None,
        };
        assert_eq!(r.expire(&policy, 3.0), vec![3, 1]);
        assert_eq!(r.kept(), 1);
        assert_eq!(r.dropped(), 2);
        let none = Policy {
            max_jobs: Some(0),
            max_age: None,
        };
        assert_eq!(r.expire(&none, 3.0), vec![2]);
        assert_eq!(r.kept(), 0);
    }

    #[test]
    fn an_age_lets_go_of_the_ends_older_than_it_only() {
        let mut r = ended(&[(10.0, 1), (20.0, 2), (30.0, 3)]);
        let policy = Policy {
            max_jobs: None,
            max_age: Some(Duration::from_secs(15)),
        };
        assert!(r.expire(&policy, 24.9).is_empty());
        assert_eq!(r.expire(&policy, 25.0), vec![1]);
        assert_eq!(r.expire(&policy, 35.0), vec![2]);
        assert_eq!(r.kept(), 1);
    }

    #[test]
    fn a_pinned_job_stays_until_its_dependents_end() {
        let mut r = ended(&[(1.0, 1), (2.0, 2)]);
        r.pin(&[1, 1]);
        let none = Policy {
            max_jobs: Some(0),
            max_age: None,
        };
        assert_eq!(r.expire(&none, 2.0), vec![2]);
        assert_eq!(r.kept(), 1);
        r.unpin(&[1]);
        assert!(r.expire(&none, 2.0).is_empty(), "one dependent is left");
        r.unpin(&[1]);
        assert_eq!(r.expire(&none, 2.0), vec![1]);
        assert_eq!((r.kept(), r.dropped()), (0, 2));
    }

    #[test]
    fn a_held_job_does_not_take_a_newer_ends_place() {
        let mut r = ended(&[(1.0, 1), (2.0, 2)]);
        r.pin(&[1]);
        let one = Policy {
            max_jobs: Some(1),
            max_age: None,
        };
        assert!(
            r.expire(&one, 2.0).is_empty(),
            "1 is held, 2 is the one kept"
        );
        assert_eq!(r.kept(), 2);
        r.ended(3, 3.0);
        assert_eq!(r.expire(&one, 3.0), vec![2]);
        r.unpin(&[1]);
        assert_eq!(r.expire(&one, 3.0), vec![1], "the oldest end goes first");
        assert_eq!(r.kept(), 1);
    }
}
