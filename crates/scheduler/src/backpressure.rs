//! Back-pressure: slow intake down before the system drowns.
//!
//! Pressure is a number from 0.0 (idle) to 1.0 (saturated): the larger of what a
//! pluggable [`BackPressureListener`] reports (queue depth of a downstream
//! service, memory, anything) and the scheduler's own load (live tasks over
//! capacity, when a capacity is set). The scheduler reads it every
//! `check_interval` steps and whenever it is about to go idle.
//!
//! At or above the high watermark the scheduler *pauses*: producers waiting at
//! the admission gate ([`TaskContext::admit`](crate::TaskContext::admit)) stay
//! there, and tasks whose I/O became ready are held instead of run, so the
//! scheduler works off what it has before taking more in. Below the low
//! watermark it *resumes* and releases both. The gap between the watermarks
//! keeps it from flapping. System tasks are never held.

/// A source of pressure, from 0.0 to 1.0.
pub trait BackPressureListener {
    /// The current pressure; values outside 0.0–1.0 are clamped, NaN reads as 0.
    fn pressure(&mut self) -> f64;
}

impl<F: FnMut() -> f64> BackPressureListener for F {
    fn pressure(&mut self) -> f64 {
        self()
    }
}

/// Back-pressure settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Watermarks {
    /// Pause at or above this pressure. Default 0.8.
    pub high: f64,
    /// Resume below this pressure. Default 0.5.
    pub low: f64,
    /// Read the pressure every this many scheduler steps. Default 64.
    pub check_interval: u32,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks {
            high: 0.8,
            low: 0.5,
            check_interval: 64,
        }
    }
}

pub(crate) fn clamp_pressure(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// The intake gate: the last pressure reading and whether intake is paused.
/// The kernel feeds it readings ([`Gate::apply`]) and acts on the changes it
/// reports (holding or releasing tasks, an event).
#[derive(Debug)]
pub(crate) struct Gate {
    watermarks: Watermarks,
    pressure: f64,
    paused: bool,
}

/// A change of the gate (see [`Gate::apply`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Change {
    /// The pressure reached the high watermark: intake pauses.
    Paused(f64),
    /// The pressure fell below the low watermark: intake resumes.
    Resumed(f64),
}

impl Gate {
    pub(crate) fn new(watermarks: Watermarks) -> Self {
        Gate {
            watermarks,
            pressure: 0.0,
            paused: false,
        }
    }

    /// Takes a reading (the larger of the listener's and the own load;
    /// clamped to 0.0–1.0, NaN as 0) and says whether the gate changed.
    pub(crate) fn apply(&mut self, reading: f64) -> Option<Change> {
        let p = clamp_pressure(reading);
        self.pressure = p;
        if !self.paused && p >= self.watermarks.high {
            self.paused = true;
            Some(Change::Paused(p))
        } else if self.paused && p < self.watermarks.low {
            self.paused = false;
            Some(Change::Resumed(p))
        } else {
            None
        }
    }

    /// Whether intake is paused.
    #[inline]
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// The last reading.
    pub(crate) fn pressure(&self) -> f64 {
        self.pressure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_pauses_at_high_and_resumes_below_low_only() {
        let mut g = Gate::new(Watermarks::default());
        assert_eq!(g.apply(0.79), None);
        assert_eq!(g.apply(0.8), Some(Change::Paused(0.8)));
        assert_eq!(g.apply(0.95), None);
        assert_eq!(g.apply(0.5), None, "the gap keeps it paused");
        assert!(g.paused());
        assert_eq!(g.apply(f64::NAN), Some(Change::Resumed(0.0)));
        assert_eq!(g.apply(7.0), Some(Change::Paused(1.0)));
        assert_eq!(g.pressure(), 1.0);
    }
}
