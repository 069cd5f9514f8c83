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

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit value is `()` and only `()`; other values are themselves.
    #[test]
    fn unit_and_other_values_downcast_to_their_own_type_only() {
        for unit in [Value::unit(), Value::new(()), Value::default()] {
            assert!(unit.is_unit());
            assert_eq!(unit.downcast_ref::<()>(), Some(&()));
            assert_eq!(unit.downcast_ref::<u32>(), None);
            assert!(unit.as_arc().is_none());
        }
        let five = Value::new(5u32);
        assert!(!five.is_unit());
        assert_eq!(five.downcast_ref::<u32>(), Some(&5));
        assert_eq!(five.downcast_ref::<()>(), None);
        assert_eq!(five.downcast_ref::<u64>(), None);
        // A `Value` given to `new` is kept, not wrapped again.
        let again = Value::new(Value::new(7u8));
        assert_eq!(again.downcast_ref::<u8>(), Some(&7));
        assert!(Value::new(Value::unit()).is_unit());
    }

    /// `from_arc` shares the value given; `as_arc` gives that same `Arc`.
    #[test]
    fn a_shared_value_is_the_same_allocation() {
        let arc: Arc<dyn Any + Send + Sync> = Arc::new(3i64);
        let v = Value::from_arc(Arc::clone(&arc));
        assert!(!v.is_unit());
        assert_eq!(v.downcast_ref::<i64>(), Some(&3));
        assert!(Arc::ptr_eq(v.as_arc().expect("a shared value"), &arc));
        assert!(Arc::ptr_eq(v.clone().as_arc().unwrap(), &arc));
    }

    /// An error's message and payload; a panic's message, whatever string
    /// type it was raised with.
    #[test]
    fn errors_keep_their_message_and_payload() {
        let plain = TaskError::new("broken");
        assert_eq!(plain.message(), "broken");
        assert_eq!(plain.to_string(), "broken");
        assert!(plain.payload().is_none());
        let carried = TaskError::with_payload("with data", Value::new(9u16));
        assert_eq!(carried.message(), "with data");
        assert_eq!(
            carried.payload().and_then(|p| p.downcast_ref::<u16>()),
            Some(&9)
        );
        let from_str = TaskError::from_panic(&"static message");
        assert_eq!(from_str.message(), "static message");
        let from_string = TaskError::from_panic(&String::from("owned message"));
        assert_eq!(from_string.message(), "owned message");
        let other = TaskError::from_panic(&42u8);
        assert_eq!(other.message(), "task panicked with a non-string payload");
        assert!(other.payload().is_none());
    }

    /// Each outcome's label, and what a joiner of it receives.
    #[test]
    fn outcomes_label_and_turn_into_join_results() {
        let done = Outcome::Done(Value::new(1u8));
        let failed = Outcome::Failed(TaskError::new("no"));
        let cancelled = Outcome::Cancelled;
        assert_eq!(
            [done.label(), failed.label(), cancelled.label()],
            ["done", "failed", "cancelled"]
        );
        let joined = done.to_join_result();
        assert!(joined.is_success());
        assert_eq!(
            joined.value().and_then(|v| v.downcast_ref::<u8>()),
            Some(&1)
        );
        match failed.to_join_result() {
            JoinResult::Failed(e) => assert_eq!(e.message(), "no"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(cancelled.to_join_result(), JoinResult::Cancelled));
        for not_success in [
            failed.to_join_result(),
            JoinResult::Cancelled,
            JoinResult::Timeout,
        ] {
            assert!(!not_success.is_success());
            assert!(not_success.value().is_none());
        }
    }
}
