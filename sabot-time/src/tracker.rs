//! Combining the watermarks of several inputs into one.

use sabot_core::Timestamp;

use crate::{Result, TimeError};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Status {
    Active,
    Idle,
    Ended,
}

#[derive(Copy, Clone, Debug)]
struct Input {
    watermark: Timestamp,
    status: Status,
}

/// Combines the watermarks of `n` inputs (channels, partitions) into one.
///
/// The combined watermark is the minimum over *active* inputs; an input that declared
/// itself idle does not hold it back until it speaks again, and an input at end of stream
/// counts as [`Timestamp::MAX`]. The combined watermark never decreases. A pure state
/// machine: no clocks, no I/O.
///
/// ```
/// use sabot_core::Timestamp;
/// use sabot_time::WatermarkTracker;
///
/// let mut t = WatermarkTracker::new(2);
/// assert_eq!(t.on_watermark(0, Timestamp::from_millis(10)).unwrap(), None);
/// assert_eq!(
///     t.on_watermark(1, Timestamp::from_millis(7)).unwrap(),
///     Some(Timestamp::from_millis(7))
/// );
/// // Input 1 goes idle: input 0 alone decides.
/// assert_eq!(t.on_idle(1).unwrap(), Some(Timestamp::from_millis(10)));
/// ```
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    inputs: Vec<Input>,
    combined: Timestamp,
}

impl WatermarkTracker {
    /// A tracker over `inputs` inputs, all active with no watermark yet.
    pub fn new(inputs: usize) -> Self {
        WatermarkTracker {
            inputs: vec![
                Input {
                    watermark: Timestamp::MIN,
                    status: Status::Active,
                };
                inputs
            ],
            combined: Timestamp::MIN,
        }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> Timestamp {
        self.combined
    }

    /// Whether every input reached end of stream.
    pub fn all_ended(&self) -> bool {
        self.inputs.iter().all(|i| i.status == Status::Ended)
    }

    /// Whether no input can currently advance the watermark: every input is idle or
    /// ended, and at least one is idle. Downstream should then treat this one as idle too.
    pub fn is_idle(&self) -> bool {
        self.inputs.iter().any(|i| i.status == Status::Idle)
            && self.inputs.iter().all(|i| i.status != Status::Active)
    }

    /// The number of inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `input` announced watermark `wm`. A watermark older than the input's last one
    /// is ignored (watermarks never go back). Returns the new combined watermark if it
    /// advanced.
    pub fn on_watermark(&mut self, input: usize, wm: Timestamp) -> Result<Option<Timestamp>> {
        let i = self.input(input, "a watermark")?;
        i.status = Status::Active;
        i.watermark = i.watermark.max(wm);
        Ok(self.recompute())
    }

    /// Input `input` sent data: an idle input becomes active again.
    pub fn on_data(&mut self, input: usize) -> Result<Option<Timestamp>> {
        let i = self.input(input, "data")?;
        if i.status == Status::Active {
            return Ok(None);
        }
        i.status = Status::Active;
        Ok(self.recompute())
    }

    /// Input `input` has nothing to say for now: it stops holding the watermark back.
    pub fn on_idle(&mut self, input: usize) -> Result<Option<Timestamp>> {
        let i = self.input(input, "an idle marker")?;
        i.status = Status::Idle;
        Ok(self.recompute())
    }

    /// Input `input` reached end of stream: it counts as [`Timestamp::MAX`] from now on.
    pub fn on_end_of_stream(&mut self, input: usize) -> Result<Option<Timestamp>> {
        let i = self.input(input, "end of stream")?;
        i.status = Status::Ended;
        i.watermark = Timestamp::MAX;
        Ok(self.recompute())
    }

    fn input(&mut self, input: usize, what: &'static str) -> Result<&mut Input> {
        let inputs = self.inputs.len();
        let i = self
            .inputs
            .get_mut(input)
            .ok_or(TimeError::UnknownInput { input, inputs })?;
        if i.status == Status::Ended {
            return Err(TimeError::AfterEndOfStream { input, what });
        }
        Ok(i)
    }

    fn recompute(&mut self) -> Option<Timestamp> {
        let mut min: Option<Timestamp> = None;
        for i in &self.inputs {
            if i.status != Status::Idle {
                min = Some(min.map_or(i.watermark, |m| m.min(i.watermark)));
            }
        }
        // All inputs idle: nothing can be said, keep the current watermark.
        let candidate = min?;
        if candidate > self.combined {
            self.combined = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn end_of_stream_on_all_inputs_gives_max() {
        let mut t = WatermarkTracker::new(2);
        t.on_watermark(0, ts(5)).unwrap();
        assert_eq!(t.on_end_of_stream(0).unwrap(), None);
        assert_eq!(t.on_end_of_stream(1).unwrap(), Some(Timestamp::MAX));
        assert!(t.all_ended());
    }

    #[test]
    fn idle_input_rejoins_when_it_sends_data() {
        let mut t = WatermarkTracker::new(2);
        t.on_watermark(0, ts(100)).unwrap();
        assert_eq!(t.on_idle(1).unwrap(), Some(ts(100)));
        assert_eq!(t.on_data(1).unwrap(), None);
        assert_eq!(
            t.on_watermark(0, ts(200)).unwrap(),
            None,
            "input 1 holds it back again"
        );
        assert_eq!(t.on_watermark(1, ts(150)).unwrap(), Some(ts(150)));
    }

    #[test]
    fn bad_input_index_is_an_error_not_a_panic() {
        let mut t = WatermarkTracker::new(1);
        assert!(matches!(
            t.on_watermark(3, ts(1)),
            Err(TimeError::UnknownInput {
                input: 3,
                inputs: 1
            })
        ));
        t.on_end_of_stream(0).unwrap();
        assert!(t.on_watermark(0, ts(1)).is_err());
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Wm(usize, i64),
        Data(usize),
        Idle(usize),
        End(usize),
    }

    fn ev(n: usize) -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (0..n, -50i64..500).prop_map(|(i, w)| Ev::Wm(i, w)),
            1 => (0..n).prop_map(Ev::Data),
            1 => (0..n).prop_map(Ev::Idle),
            1 => (0..n).prop_map(Ev::End),
        ]
    }

    proptest! {
        #[test]
        fn tracker_matches_naive_recomputation(events in proptest::collection::vec(ev(4), 0..100)) {
            let n = 4;
            let mut t = WatermarkTracker::new(n);
            // Model: per input (max watermark, idle, ended); recompute from scratch.
            let mut wm = vec![i64::MIN; n];
            let mut idle = vec![false; n];
            let mut ended = vec![false; n];
            let mut emitted = i64::MIN;
            for e in events {
                let (i, res) = match e {
                    Ev::Wm(i, w) => (i, t.on_watermark(i, ts(w))),
                    Ev::Data(i) => (i, t.on_data(i)),
                    Ev::Idle(i) => (i, t.on_idle(i)),
                    Ev::End(i) => (i, t.on_end_of_stream(i)),
                };
                if ended[i] {
                    prop_assert!(res.is_err());
                    continue;
                }
                match e {
                    Ev::Wm(_, w) => { wm[i] = wm[i].max(w); idle[i] = false; }
                    Ev::Data(_) => idle[i] = false,
                    Ev::Idle(_) => idle[i] = true,
                    Ev::End(_) => { ended[i] = true; wm[i] = i64::MAX; idle[i] = false; }
                }
                let model = (0..n).filter(|&j| !idle[j]).map(|j| wm[j]).min();
                let expected = match model {
                    Some(m) if m > emitted => { emitted = m; Some(ts(m)) }
                    _ => None,
                };
                prop_assert_eq!(res.unwrap(), expected);
                prop_assert_eq!(t.current(), ts(emitted));
            }
        }
    }
}
