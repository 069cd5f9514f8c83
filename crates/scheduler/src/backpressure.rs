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
