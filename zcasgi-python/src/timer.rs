//! One asyncio loop timer that follows a Rust deadline (`loop.call_later`).

use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;

/// How late a timer may fire so that nearby deadlines share one loop callback.
pub const TIMER_SLACK: Duration = Duration::from_millis(20);

/// A loop timer armed at the earliest deadline asked for: re-armed only when a deadline comes
/// before the armed one by more than [`TIMER_SLACK`], so that a deadline that moves later or
/// little costs no loop call.
#[derive(Default)]
pub struct LoopTimer {
    /// When the armed timer fires, and its handle (`asyncio.TimerHandle`).
    armed: Option<(Instant, Py<PyAny>)>,
}

impl LoopTimer {
    /// Arms the timer on `event_loop` to call `callback` at `due` (a past `due`: at once),
    /// unless it fires in time for it already. `callback` is asked for only when the timer is
    /// (re-)armed.
    ///
    /// # Errors
    /// What `call_later` or `cancel` raised.
    pub fn arm<'py>(
        &mut self,
        event_loop: &Bound<'py, PyAny>,
        due: Instant,
        callback: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        if self.armed.as_ref().is_some_and(|(at, _)| *at <= due + TIMER_SLACK) {
            return Ok(());
        }
        self.cancel(event_loop.py())?;
        let now = Instant::now();
        let at = if due <= now { now } else { due + TIMER_SLACK / 2 };
        let delay = at.saturating_duration_since(now).as_secs_f64();
        let handle = event_loop
            .call_method1(intern!(event_loop.py(), "call_later"), (delay, callback()?))?;
        self.armed = Some((at, handle.unbind()));
        Ok(())
    }

    /// Forgets the timer: it fired. Call it first in the timer's own callback (the loop's
    /// clock may run it a little before its instant, so the instant cannot tell).
    pub fn fired(&mut self) {
        self.armed = None;
    }

    /// Cancels the armed timer, if any.
    ///
    /// # Errors
    /// What `TimerHandle.cancel` raised.
    pub fn cancel(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some((_, handle)) = self.armed.take() {
            handle.call_method0(py, intern!(py, "cancel"))?;
        }
        Ok(())
    }
}
