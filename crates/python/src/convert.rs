//! Task results across the language boundary.
//!
//! A Python task's result is stored in the kernel as the Python object itself.
//! A native task's result is a Rust value; the common ones (integers, floats,
//! strings, booleans, unit) become their Python equivalents, anything else
//! becomes `None`.

use pyo3::prelude::*;
use tiffany_scheduler::Value;

pub(crate) fn value_to_py(py: Python<'_>, v: &Value) -> Py<PyAny> {
    if v.is_unit() {
        return py.None();
    }
    if let Some(obj) = v.downcast_ref::<Py<PyAny>>() {
        return obj.clone_ref(py);
    }
    if let Some(done) = v.downcast_ref::<tiffany_scheduler::process::Completed>() {
        return crate::process::completed_to_py(py, done);
    }
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(
                if let Some(x) = v.downcast_ref::<$t>() {
                    return x.clone().into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None());
                }
            )*
        };
    }
    try_types!(
        i64, i32, u64, u32, usize, isize, i16, u16, i8, u8, f64, f32, String
    );
    if let Some(b) = v.downcast_ref::<bool>() {
        return pyo3::types::PyBool::new(py, *b)
            .to_owned()
            .into_any()
            .unbind();
    }
    if let Some(s) = v.downcast_ref::<&'static str>()
        && let Ok(o) = s.into_pyobject(py)
    {
        return o.into_any().unbind();
    }
    py.None()
}
