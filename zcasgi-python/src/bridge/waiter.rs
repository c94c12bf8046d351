//! What a task parks on in `receive()` (and in a `send()` above the high-water mark): an object
//! that asyncio's `Task` treats as a future, but that the cyclic garbage collector never sees.
//!
//! # Theory of operation
//!
//! A task that awaits something which is not done yields a future-like object to its `Task`,
//! which checks `_asyncio_future_blocking`, asks `get_loop()`, clears the flag and registers
//! its wake-up with `add_done_callback(fn, context=...)`; when the object is done, each
//! callback is scheduled with `loop.call_soon(fn, waiter, context=...)` and the task reads
//! `result()`. That is all a [`Waiter`] implements, plus `cancel()` (`Task.cancel` cancels
//! what its task waits on), `done()`, `cancelled()`, `exception()` and
//! `remove_done_callback()`.
//!
//! An `asyncio.Future` would do, but it is tracked by the cyclic garbage collector, and one
//! parked per connection, alive for a whole round trip, is what the collector's generations
//! mostly promote: at 10,000 connections, the full collections they bring on were about a tenth
//! of the server's CPU per message (issue 12). A `Waiter` is untracked as it is made
//! ([`Waiter::park`]): what it holds (the callbacks) is released as soon as it is done, so it
//! can be part of no lasting cycle the collector would have to find.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Where a waiter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Cancelled,
}

/// A future-like object a task parks on until the I/O side wakes it.
#[pyclass(module = "zcasgi._zcasgi")]
pub struct Waiter {
    state: State,
    event_loop: Py<PyAny>,
    /// `(callback, context)` pairs registered by `add_done_callback`.
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    /// Set by a task that yields the waiter, cleared by the task once it registered itself.
    #[pyo3(get, set, name = "_asyncio_future_blocking")]
    blocking: bool,
    /// The message of a cancellation.
    cancel_message: Option<Py<PyAny>>,
}

impl Waiter {
    /// A pending waiter on `event_loop`, marked so that a task yielding it parks, and not
    /// tracked by the cyclic garbage collector.
    ///
    /// # Errors
    /// If the object cannot be allocated.
    pub fn park(py: Python<'_>, event_loop: Py<PyAny>) -> PyResult<Py<Self>> {
        let waiter = Self {
            state: State::Pending,
            event_loop,
            callbacks: Vec::new(),
            blocking: true,
            cancel_message: None,
        };
        let waiter = Py::new(py, waiter)?;
        // SAFETY: a live object of a GC type (every pyclass is one), untracked once; its
        // deallocation untracks only what is tracked.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(waiter.as_ptr().cast()) };
        Ok(waiter)
    }

    /// Marks the waiter `state` and schedules its callbacks; `false` if it was done already.
    fn settle(slf: &Bound<'_, Self>, state: State) -> PyResult<bool> {
        let py = slf.py();
        let (callbacks, event_loop) = {
            let mut w = slf.borrow_mut();
            if w.state != State::Pending {
                return Ok(false);
            }
            w.state = state;
            (std::mem::take(&mut w.callbacks), w.event_loop.clone_ref(py))
        };
        let call_soon = event_loop.getattr(py, intern!(py, "call_soon"))?;
        for (callback, context) in callbacks {
            let kwargs = PyDict::new(py);
            if let Some(context) = context {
                kwargs.set_item(intern!(py, "context"), context)?;
            }
            call_soon.call(py, (callback, slf), Some(&kwargs))?;
        }
        Ok(true)
    }

    /// Wakes the task parked on the waiter (a done or cancelled waiter: nothing to do).
    pub fn wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::settle(slf, State::Done).map(drop)
    }
}

#[pymethods]
impl Waiter {
    /// The event loop the waiter belongs to.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    /// Calls `callback(waiter)` through the loop once the waiter is done (at once if it is).
    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let pending = slf.borrow().state == State::Pending;
        if pending {
            slf.borrow_mut().callbacks.push((callback, context));
            return Ok(());
        }
        let py = slf.py();
        let kwargs = PyDict::new(py);
        if let Some(context) = context {
            kwargs.set_item(intern!(py, "context"), context)?;
        }
        let event_loop = slf.borrow().event_loop.clone_ref(py);
        event_loop.call_method(py, intern!(py, "call_soon"), (callback, slf), Some(&kwargs))?;
        Ok(())
    }

    /// Forgets every registration of `callback`; returns how many there were.
    fn remove_done_callback(&mut self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> usize {
        let before = self.callbacks.len();
        self.callbacks.retain(|(cb, _)| !cb.bind(py).eq(callback).unwrap_or(false));
        before - self.callbacks.len()
    }

    /// Cancels the waiter (its task was cancelled); `False` if it was done already.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        if slf.borrow().state != State::Pending {
            return Ok(false);
        }
        slf.borrow_mut().cancel_message = msg;
        Self::settle(slf, State::Cancelled)
    }

    /// Whether the waiter is done (woken or cancelled).
    fn done(&self) -> bool {
        self.state != State::Pending
    }

    /// Whether the waiter was cancelled.
    fn cancelled(&self) -> bool {
        self.state == State::Cancelled
    }

    /// `None` once woken; raises `CancelledError` once cancelled.
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.state {
            State::Done => Ok(None),
            State::Cancelled => Err(self.cancelled_error(py)),
            State::Pending => Err(invalid_state(py, "Result is not ready.")),
        }
    }

    /// `None` once woken; raises `CancelledError` once cancelled.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.result(py)
    }
}

impl Waiter {
    fn cancelled_error(&self, py: Python<'_>) -> PyErr {
        let args = match &self.cancel_message {
            Some(msg) => PyTuple::new(py, [msg.clone_ref(py)]),
            None => Ok(PyTuple::empty(py)),
        };
        let error = py
            .import(intern!(py, "asyncio"))
            .and_then(|m| m.getattr(intern!(py, "CancelledError")))
            .and_then(|cls| args.and_then(|a| cls.call1(a)));
        match error {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    }
}

fn invalid_state(py: Python<'_>, message: &str) -> PyErr {
    let error = py
        .import(intern!(py, "asyncio"))
        .and_then(|m| m.getattr(intern!(py, "InvalidStateError")))
        .and_then(|cls| cls.call1((message,)));
    match error {
        Ok(e) => PyErr::from_value(e),
        Err(_) => PyRuntimeError::new_err(message.to_owned()),
    }
}
