//! Combining the watermarks of several inputs into one.

use std::time::Duration;

use sabot_core::{Timestamp, duration_millis};

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
    /// Processing time (ms) of the input's last data or watermark.
    last_active: i64,
}

/// Combines the watermarks of `n` inputs (channels, partitions) into one.
///
/// - The combined watermark is the minimum over *active* inputs, and never decreases.
/// - An input is idle when it said so ([`on_idle`](Self::on_idle)) or, with an idle
///   timeout, when it sent neither data nor watermark for that long
///   ([`on_tick`](Self::on_tick)). An idle input does not hold the watermark back; it
///   rejoins as soon as it sends data or a watermark again. Its records that are then
///   behind the combined watermark are late, and downstream lateness rules apply to them.
/// - When every input that has not ended is idle, the watermark stays where it is.
/// - An input at end of stream counts as [`Timestamp::MAX`].
///
/// A pure state machine: processing time is passed in (`now`, ms), nothing reads a clock.
/// An update costs `O(log n)`: the minimum is kept in a tournament tree.
///
/// ```
/// use std::time::Duration;
/// use sabot_core::Timestamp;
/// use sabot_time::WatermarkTracker;
///
/// let ts = Timestamp::from_millis;
/// let mut t = WatermarkTracker::new(2).with_idle_timeout(Duration::from_secs(5));
/// assert_eq!(t.on_watermark(0, ts(10), 0).unwrap(), None);
/// assert_eq!(t.on_watermark(1, ts(7), 0).unwrap(), Some(ts(7)));
/// assert_eq!(t.on_watermark(0, ts(20), 4_000).unwrap(), None);
/// // Input 1 has been silent for 5 s: input 0 alone decides.
/// assert_eq!(t.on_tick(5_000), Some(ts(20)));
/// ```
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    inputs: Vec<Input>,
    /// Tournament tree of effective watermarks (idle and ended inputs count as MAX);
    /// leaves at `leaves..leaves + n`, the minimum at index 1.
    tree: Vec<Timestamp>,
    leaves: usize,
    active: usize,
    ended: usize,
    combined: Timestamp,
    idle_timeout_ms: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker over `inputs` inputs, all active with no watermark yet, without idle
    /// timeout.
    pub fn new(inputs: usize) -> Self {
        let leaves = inputs.max(1).next_power_of_two();
        let mut tree = vec![Timestamp::MAX; 2 * leaves];
        for leaf in &mut tree[leaves..leaves + inputs] {
            *leaf = Timestamp::MIN;
        }
        for i in (1..leaves).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        WatermarkTracker {
            inputs: vec![
                Input {
                    watermark: Timestamp::MIN,
                    status: Status::Active,
                    last_active: 0,
                };
                inputs
            ],
            tree,
            leaves,
            active: inputs,
            ended: 0,
            combined: Timestamp::MIN,
            idle_timeout_ms: None,
        }
    }

    /// Inputs silent for `timeout` (by [`on_tick`](Self::on_tick)) become idle.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some(duration_millis(timeout));
        self
    }

    /// Treats every input as last active at `now`: call once when processing starts, so
    /// that idle timeouts count from then.
    pub fn start(&mut self, now: i64) {
        for i in &mut self.inputs {
            i.last_active = now;
        }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> Timestamp {
        self.combined
    }

    /// Whether every input reached end of stream.
    pub fn all_ended(&self) -> bool {
        self.ended == self.inputs.len()
    }

    /// Whether no input can currently advance the watermark: every input is idle or
    /// ended, and at least one is idle. Downstream should then treat this one as idle too.
    pub fn is_idle(&self) -> bool {
        self.active == 0 && self.ended < self.inputs.len()
    }

    /// The number of inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `input` announced watermark `wm` at processing time `now`. A watermark older
    /// than the input's last one is ignored (watermarks never go back). Returns the new
    /// combined watermark if it advanced.
    #[inline]
    pub fn on_watermark(
        &mut self,
        input: usize,
        wm: Timestamp,
        now: i64,
    ) -> Result<Option<Timestamp>> {
        self.check(input, "a watermark")?;
        let i = &mut self.inputs[input];
        i.last_active = now;
        let was_active = i.status == Status::Active;
        if was_active && wm <= i.watermark {
            return Ok(None);
        }
        i.watermark = i.watermark.max(wm);
        if !was_active {
            self.set_status(input, Status::Active);
        }
        self.update_leaf(input);
        Ok(self.advance())
    }

    /// Input `input` sent data at processing time `now`: an idle input becomes active.
    #[inline]
    pub fn on_data(&mut self, input: usize, now: i64) -> Result<Option<Timestamp>> {
        self.check(input, "data")?;
        self.inputs[input].last_active = now;
        if self.inputs[input].status == Status::Active {
            return Ok(None);
        }
        self.set_status(input, Status::Active);
        self.update_leaf(input);
        Ok(self.advance())
    }

    /// Input `input` declared it has nothing to say for now.
    pub fn on_idle(&mut self, input: usize) -> Result<Option<Timestamp>> {
        self.check(input, "an idle marker")?;
        if self.inputs[input].status == Status::Idle {
            return Ok(None);
        }
        self.set_status(input, Status::Idle);
        self.update_leaf(input);
        Ok(self.advance())
    }

    /// Input `input` reached end of stream: it counts as [`Timestamp::MAX`] from now on.
    pub fn on_end_of_stream(&mut self, input: usize) -> Result<Option<Timestamp>> {
        self.check(input, "end of stream")?;
        self.set_status(input, Status::Ended);
        self.inputs[input].watermark = Timestamp::MAX;
        self.update_leaf(input);
        Ok(self.advance())
    }

    /// Processing time moved to `now`: with an idle timeout, inputs silent for that long
    /// become idle. Returns the new combined watermark if it advanced.
    pub fn on_tick(&mut self, now: i64) -> Option<Timestamp> {
        let timeout = self.idle_timeout_ms?;
        let mut changed = false;
        for input in 0..self.inputs.len() {
            let i = self.inputs[input];
            if i.status == Status::Active && now.saturating_sub(i.last_active) >= timeout {
                self.set_status(input, Status::Idle);
                self.update_leaf(input);
                changed = true;
            }
        }
        if changed { self.advance() } else { None }
    }

    fn check(&self, input: usize, what: &'static str) -> Result<()> {
        match self.inputs.get(input) {
            None => Err(TimeError::UnknownInput {
                input,
                inputs: self.inputs.len(),
            }),
            Some(i) if i.status == Status::Ended => {
                Err(TimeError::AfterEndOfStream { input, what })
            }
            Some(_) => Ok(()),
        }
    }

    fn set_status(&mut self, input: usize, status: Status) {
        let i = &mut self.inputs[input];
        match i.status {
            Status::Active => self.active -= 1,
            Status::Ended => self.ended -= 1,
            Status::Idle => {}
        }
        match status {
            Status::Active => self.active += 1,
            Status::Ended => self.ended += 1,
            Status::Idle => {}
        }
        i.status = status;
    }

    #[inline]
    fn update_leaf(&mut self, input: usize) {
        let i = &self.inputs[input];
        let value = if i.status == Status::Active {
            i.watermark
        } else {
            Timestamp::MAX
        };
        let mut node = self.leaves + input;
        self.tree[node] = value;
        while node > 1 {
            node /= 2;
            let m = self.tree[2 * node].min(self.tree[2 * node + 1]);
            if self.tree[node] == m {
                break;
            }
            self.tree[node] = m;
        }
    }

    #[inline]
    fn advance(&mut self) -> Option<Timestamp> {
        let candidate = if self.active > 0 {
            self.tree[1]
        } else if self.all_ended() {
            Timestamp::MAX
        } else {
            // Every remaining input is idle: nothing can be said.
            return None;
        };
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
        t.on_watermark(0, ts(5), 0).unwrap();
        assert_eq!(t.on_end_of_stream(0).unwrap(), None);
        assert_eq!(t.on_end_of_stream(1).unwrap(), Some(Timestamp::MAX));
        assert!(t.all_ended());
    }

    #[test]
    fn idle_input_rejoins_when_it_sends_data() {
        let mut t = WatermarkTracker::new(2);
        t.on_watermark(0, ts(100), 0).unwrap();
        assert_eq!(t.on_idle(1).unwrap(), Some(ts(100)));
        assert_eq!(t.on_data(1, 0).unwrap(), None);
        assert_eq!(
            t.on_watermark(0, ts(200), 0).unwrap(),
            None,
            "input 1 holds it back again"
        );
        assert_eq!(t.on_watermark(1, ts(150), 0).unwrap(), Some(ts(150)));
    }

    #[test]
    fn silent_input_times_out_and_rejoins() {
        let mut t = WatermarkTracker::new(3).with_idle_timeout(Duration::from_millis(100));
        t.start(1_000);
        for i in 0..3 {
            t.on_watermark(i, ts(10), 1_000).unwrap();
        }
        t.on_watermark(0, ts(50), 1_050).unwrap();
        t.on_watermark(1, ts(60), 1_050).unwrap();
        assert_eq!(t.on_tick(1_099), None, "not silent long enough");
        assert_eq!(t.on_tick(1_100), Some(ts(50)));
        assert!(!t.is_idle());
        // Input 2 speaks again, behind the combined watermark: it rejoins, nothing goes back.
        assert_eq!(t.on_watermark(2, ts(20), 1_200).unwrap(), None);
        assert_eq!(t.current(), ts(50));
        assert_eq!(t.on_watermark(0, ts(90), 1_200).unwrap(), None);
        assert_eq!(t.on_watermark(2, ts(70), 1_200).unwrap(), Some(ts(60)));
    }

    #[test]
    fn all_idle_keeps_the_watermark() {
        let mut t = WatermarkTracker::new(2).with_idle_timeout(Duration::from_millis(10));
        t.on_watermark(0, ts(5), 0).unwrap();
        t.on_watermark(1, ts(8), 0).unwrap();
        assert_eq!(t.on_tick(100), None);
        assert!(t.is_idle());
        assert_eq!(t.current(), ts(5));
    }

    #[test]
    fn bad_input_index_is_an_error_not_a_panic() {
        let mut t = WatermarkTracker::new(1);
        assert!(matches!(
            t.on_watermark(3, ts(1), 0),
            Err(TimeError::UnknownInput {
                input: 3,
                inputs: 1
            })
        ));
        t.on_end_of_stream(0).unwrap();
        assert!(t.on_watermark(0, ts(1), 0).is_err());
        assert!(t.on_end_of_stream(0).is_err());
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Wm(usize, i64),
        Data(usize),
        Idle(usize),
        End(usize),
        /// Processing time passes.
        Wait(i64),
    }

    fn ev(n: usize) -> impl Strategy<Value = Ev> {
        prop_oneof![
            6 => (0..n, -50i64..500).prop_map(|(i, w)| Ev::Wm(i, w)),
            2 => (0..n).prop_map(Ev::Data),
            1 => (0..n).prop_map(Ev::Idle),
            1 => (0..n).prop_map(Ev::End),
            2 => (0i64..80).prop_map(Ev::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn tracker_matches_naive_recomputation(
            n in 1usize..7,
            events in proptest::collection::vec(ev(6), 0..150),
            timeout in proptest::option::of(1i64..100),
        ) {
            let mut t = WatermarkTracker::new(n);
            if let Some(ms) = timeout {
                t = t.with_idle_timeout(Duration::from_millis(ms as u64));
            }
            t.start(0);
            // Model: per input (max watermark, idle, ended, last active); recompute the
            // minimum from scratch after every event.
            let mut wm = vec![i64::MIN; n];
            let mut idle = vec![false; n];
            let mut ended = vec![false; n];
            let mut last = vec![0i64; n];
            let mut now = 0i64;
            let mut emitted = i64::MIN;
            for e in events {
                let res = match e {
                    Ev::Wm(i, w) if i < n => (i, t.on_watermark(i, ts(w), now)),
                    Ev::Data(i) if i < n => (i, t.on_data(i, now)),
                    Ev::Idle(i) if i < n => (i, t.on_idle(i)),
                    Ev::End(i) if i < n => (i, t.on_end_of_stream(i)),
                    Ev::Wait(d) => { now += d; (usize::MAX, Ok(t.on_tick(now))) }
                    _ => continue,
                };
                let (i, res) = res;
                if i != usize::MAX && ended[i] {
                    prop_assert!(res.is_err());
                    continue;
                }
                match e {
                    Ev::Wm(_, w) => { wm[i] = wm[i].max(w); idle[i] = false; last[i] = now; }
                    Ev::Data(_) => { idle[i] = false; last[i] = now; }
                    Ev::Idle(_) => idle[i] = true,
                    Ev::End(_) => { ended[i] = true; wm[i] = i64::MAX; idle[i] = false; }
                    Ev::Wait(_) => {
                        if let Some(ms) = timeout {
                            for j in 0..n {
                                if !ended[j] && now - last[j] >= ms { idle[j] = true; }
                            }
                        }
                    }
                }
                let model = if ended.iter().all(|&e| e) {
                    Some(i64::MAX)
                } else {
                    (0..n).filter(|&j| !idle[j] && !ended[j]).map(|j| wm[j]).min()
                };
                let expected = match model {
                    Some(m) if m > emitted => { emitted = m; Some(ts(m)) }
                    _ => None,
                };
                prop_assert_eq!(res.unwrap(), expected);
                prop_assert_eq!(t.current(), ts(emitted), "monotonic and equal to the model");
                let model_idle = !ended.iter().all(|&e| e) && (0..n).all(|j| idle[j] || ended[j]);
                prop_assert_eq!(t.is_idle(), model_idle);
            }
        }
    }
}
