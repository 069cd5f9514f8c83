//! What a task leaves behind: its value, its error, and what joiners receive.
//!
//! A task's result must reach every task that joins it, possibly several, and
//! possibly of another kind (a Python task joining a native one). So results are
//! type-erased and shared: a [`Value`] is a cheap clone of an `Arc<dyn Any>`, and
//! the joiner downcasts it to the type it expects.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// A task's return value, shared by every joiner.
///
/// `()` is stored without allocating. Other values are boxed once when the task
/// returns.
#[derive(Clone, Default)]
pub struct Value(Option<Arc<dyn Any + Send + Sync>>);

impl Value {
    /// The unit value `()`.
    pub const fn unit() -> Self {
        Value(None)
    }

    /// Wraps any sendable value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return Value(None);
        }
        // A `Value` passed through is kept as it is, not wrapped again.
        let mut slot = Some(value);
        if let Some(v) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Value>>() {
            return v.take().unwrap_or_default();
        }
        let Some(value) = slot else {
            return Value(None);
        };
        Value(Some(Arc::new(value)))
    }

    /// Wraps an already shared value.
    pub fn from_arc(value: Arc<dyn Any + Send + Sync>) -> Self {
        Value(Some(value))
    }

    /// Whether this is `()`.
    pub fn is_unit(&self) -> bool {
        self.0.is_none()
    }

    /// Borrows the value as `T`, if it is one (`()` answers for the unit value).
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match &self.0 {
            Some(v) => v.downcast_ref::<T>(),
            None if TypeId::of::<T>() == TypeId::of::<()>() => {
                // SAFETY-free path: a unit value is a zero-sized `()`.
                (&() as &dyn Any).downcast_ref::<T>()
            }
            None => None,
        }
    }

    /// The shared value, unless it is `()`.
    pub fn as_arc(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.0.as_ref()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Value(())"),
            Some(v) => {
                if let Some(s) = v.downcast_ref::<String>() {
                    write!(f, "Value({s:?})")
                } else if let Some(s) = v.downcast_ref::<&'static str>() {
                    write!(f, "Value({s:?})")
                } else if let Some(n) = v.downcast_ref::<i64>() {
                    write!(f, "Value({n})")
                } else if let Some(n) = v.downcast_ref::<i32>() {
                    write!(f, "Value({n})")
                } else if let Some(n) = v.downcast_ref::<u64>() {
                    write!(f, "Value({n})")
                } else {
                    f.write_str("Value(..)")
                }
            }
        }
    }
}

/// Why a task failed.
///
/// One pointer wide (the message and payload are shared behind it), so that
/// outcomes and answers stay small in every task record.
#[derive(Clone, Debug)]
pub struct TaskError(Arc<ErrorInner>);

#[derive(Debug)]
struct ErrorInner {
    message: Arc<str>,
    payload: Option<Value>,
}

impl TaskError {
    /// A failure described by a message.
    pub fn new(message: impl Into<Arc<str>>) -> Self {
        TaskError(Arc::new(ErrorInner {
            message: message.into(),
            payload: None,
        }))
    }

    /// A failure carrying a payload for the joiner (a Python exception object,
    /// for example) besides its message.
    pub fn with_payload(message: impl Into<Arc<str>>, payload: Value) -> Self {
        TaskError(Arc::new(ErrorInner {
            message: message.into(),
            payload: Some(payload),
        }))
    }

    /// Builds the error for a caught panic, keeping its message.
    pub fn from_panic(payload: &(dyn Any + Send)) -> Self {
        let message: Arc<str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Arc::from(*s)
        } else if let Some(s) = payload.downcast_ref::<String>() {
            Arc::from(s.as_str())
        } else {
            Arc::from("task panicked with a non-string payload")
        };
        TaskError::new(message)
    }

    /// The failure's message (a panic's message for native tasks).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The payload, if the failing body attached one.
    pub fn payload(&self) -> Option<&Value> {
        self.0.payload.as_ref()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for TaskError {}

/// How a task ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It returned this value.
    Done(Value),
    /// It failed.
    Failed(TaskError),
    /// It was cancelled.
    Cancelled,
}

impl Outcome {
    /// The outcome's label in metrics and events: `done`, `failed`, `cancelled`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub(crate) fn to_join_result(&self) -> JoinResult {
        match self {
            Outcome::Done(v) => JoinResult::Success(v.clone()),
            Outcome::Failed(e) => JoinResult::Failed(e.clone()),
            Outcome::Cancelled => JoinResult::Cancelled,
        }
    }
}

/// What a joiner receives.
#[derive(Clone, Debug)]
pub enum JoinResult {
    /// The target returned this value.
    Success(Value),
    /// The target failed.
    Failed(TaskError),
    /// The target was cancelled.
    Cancelled,
    /// The join's timeout passed first; the target goes on.
    Timeout,
}

impl JoinResult {
    /// Whether the target returned normally.
    pub fn is_success(&self) -> bool {
        matches!(self, JoinResult::Success(_))
    }

    /// The value, if the target returned normally.
    pub fn value(&self) -> Option<&Value> {
        match self {
            JoinResult::Success(v) => Some(v),
            _ => None,
        }
    }
}
