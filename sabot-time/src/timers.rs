//! Event-time and processing-time timers, with snapshots split by key group.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;

use hashbrown::{HashMap, HashSet};
use sabot_core::{KeyGroupRange, Timestamp};

use crate::codec::TimerKey;
use crate::{Result, TimeError};
use sabot_core::codec::{Codec, take};

/// Which clock a timer follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when processing time (a clock passed in) reaches the timer's time.
    ProcessingTime,
}

/// A timer that fired.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer<K, N> {
    /// When it was due.
    pub timestamp: Timestamp,
    /// The key it was registered for.
    pub key: K,
    /// The namespace it was registered in (a window, say).
    pub namespace: N,
}

/// One clock's timers, bucketed by timestamp: timers of one window end share a bucket, so
/// registering is two hash lookups, and firing drains a bucket at a time, sorted by
/// (key, namespace) for a deterministic order. A min-heap orders the buckets' timestamps
/// (an entry whose bucket was emptied by deletes is skipped when it surfaces).
#[derive(Clone, Debug)]
struct TimerQueue<K: Ord + Hash, N: Ord + Hash> {
    buckets: HashMap<Timestamp, HashSet<(K, N)>>,
    order: BinaryHeap<Reverse<Timestamp>>,
    /// The bucket being fired: its timestamp and its remaining timers, sorted descending
    /// (the next to fire is last).
    firing: Option<(Timestamp, Vec<(K, N)>)>,
    /// Whether a timer earlier than the firing bucket was registered since it began to
    /// fire (only then can a bucket precede it; otherwise firing needs no look at the
    /// other buckets per timer).
    earlier: bool,
    len: usize,
}

impl<K: Ord + Hash + Clone, N: Ord + Hash + Clone> TimerQueue<K, N> {
    fn new() -> Self {
        TimerQueue {
            buckets: HashMap::new(),
            order: BinaryHeap::new(),
            firing: None,
            earlier: false,
            len: 0,
        }
    }

    fn bucket(&mut self, at: Timestamp) -> &mut HashSet<(K, N)> {
        let order = &mut self.order;
        self.buckets.entry(at).or_insert_with(|| {
            order.push(Reverse(at));
            HashSet::new()
        })
    }

    fn register(&mut self, (at, key, ns): (Timestamp, K, N)) -> bool {
        let key_ns = (key, ns);
        if let Some((ts, v)) = &mut self.firing {
            if at < *ts {
                self.earlier = true;
            } else if *ts == at {
                // Registered while its bucket fires: join it in order.
                return match v.binary_search_by(|x| key_ns.cmp(x)) {
                    Ok(_) => false,
                    Err(pos) => {
                        v.insert(pos, key_ns);
                        self.len += 1;
                        true
                    }
                };
            }
        }
        let added = self.bucket(at).insert(key_ns);
        self.len += usize::from(added);
        added
    }

    fn delete(&mut self, (at, key, ns): (Timestamp, K, N)) -> bool {
        let key_ns = (key, ns);
        if let Some((ts, v)) = &mut self.firing
            && *ts == at
        {
            return match v.binary_search_by(|x| key_ns.cmp(x)) {
                Ok(i) => {
                    v.remove(i);
                    self.len -= 1;
                    true
                }
                Err(_) => false,
            };
        }
        let Some(bucket) = self.buckets.get_mut(&at) else {
            return false;
        };
        let removed = bucket.remove(&key_ns);
        if bucket.is_empty() {
            self.buckets.remove(&at);
        }
        self.len -= usize::from(removed);
        removed
    }

    /// The earliest timestamp with a pending bucket, dropping stale heap entries.
    fn first_bucket(&mut self) -> Option<Timestamp> {
        while let Some(&Reverse(at)) = self.order.peek() {
            if self.buckets.contains_key(&at) {
                return Some(at);
            }
            self.order.pop();
        }
        None
    }

    /// The earliest timer due at `upto`, removed.
    fn pop_due(&mut self, upto: Timestamp) -> Option<Timer<K, N>> {
        loop {
            if let Some(at) = self.firing.as_ref().map(|(at, _)| *at) {
                // A timer registered while firing, earlier than this bucket, goes first.
                if self.earlier {
                    if self.first_bucket().is_some_and(|t| t < at) {
                        self.earlier = false;
                        if let Some((at, rest)) = self.firing.take() {
                            self.bucket(at).extend(rest);
                        }
                        continue;
                    }
                    // Deleted since: none precedes this bucket any more.
                    self.earlier = false;
                }
                if let Some((_, v)) = &mut self.firing
                    && let Some((key, namespace)) = v.pop()
                {
                    self.len -= 1;
                    return Some(Timer {
                        timestamp: at,
                        key,
                        namespace,
                    });
                }
                self.firing = None;
                continue;
            }
            let at = self.first_bucket()?;
            if at > upto {
                return None;
            }
            self.order.pop();
            let bucket = self.buckets.remove(&at)?;
            let mut v: Vec<(K, N)> = bucket.into_iter().collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            self.firing = Some((at, v));
            // It is the earliest bucket.
            self.earlier = false;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Every pending timer, in no particular order.
    fn iter(&self) -> impl Iterator<Item = (Timestamp, &K, &N)> {
        let firing = self
            .firing
            .iter()
            .flat_map(|(at, v)| v.iter().map(move |(k, n)| (*at, k, n)));
        self.buckets
            .iter()
            .flat_map(|(at, set)| set.iter().map(move |(k, n)| (*at, k, n)))
            .chain(firing)
    }
}

/// Timers per `(key, namespace, timestamp)`, in event time and in processing time.
///
/// Registering the same timer twice keeps one; a timer can be deleted until it fires.
/// Event-time timers fire in timestamp order (ties by key, then namespace) once the
/// watermark reaches them; processing-time timers once the processing time passed to
/// [`advance_processing_time`](Self::advance_processing_time) does. Neither fires twice.
///
/// Pull fired timers one at a time with [`next_event_timer`](Self::next_event_timer), so
/// that code handling a timer may register new ones (due ones fire in the same round).
///
/// ```
/// use sabot_core::Timestamp;
/// use sabot_time::TimerService;
///
/// let ts = Timestamp::from_millis;
/// let mut timers: TimerService<i64, ()> = TimerService::new(128);
/// timers.register_event_time_timer(7, (), ts(100));
/// timers.register_event_time_timer(7, (), ts(100)); // kept once
/// timers.register_event_time_timer(8, (), ts(50));
/// timers.advance_watermark(ts(100));
/// let fired: Vec<i64> = std::iter::from_fn(|| timers.next_event_timer()).map(|t| t.key).collect();
/// assert_eq!(fired, [8, 7]);
/// ```
#[derive(Clone, Debug)]
pub struct TimerService<K: Ord + Hash, N: Ord + Hash> {
    max_parallelism: usize,
    event: TimerQueue<K, N>,
    processing: TimerQueue<K, N>,
    watermark: Timestamp,
    processing_time: Timestamp,
}

const MAGIC: &[u8; 4] = b"SBTM";
const VERSION: u8 = 1;

impl<K: TimerKey, N: Codec + Clone + Eq + Hash + Ord> TimerService<K, N> {
    /// An empty service for keys spread over `max_parallelism` key groups.
    pub fn new(max_parallelism: usize) -> Self {
        TimerService {
            max_parallelism,
            event: TimerQueue::new(),
            processing: TimerQueue::new(),
            watermark: Timestamp::MIN,
            processing_time: Timestamp::MIN,
        }
    }

    /// The watermark timers have been advanced to.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Registers an event-time timer; returns whether it was new.
    pub fn register_event_time_timer(&mut self, key: K, namespace: N, at: Timestamp) -> bool {
        self.event.register((at, key, namespace))
    }

    /// Deletes an event-time timer; returns whether it existed.
    pub fn delete_event_time_timer(&mut self, key: K, namespace: N, at: Timestamp) -> bool {
        self.event.delete((at, key, namespace))
    }

    /// Registers a processing-time timer; returns whether it was new.
    pub fn register_processing_time_timer(&mut self, key: K, namespace: N, at: Timestamp) -> bool {
        self.processing.register((at, key, namespace))
    }

    /// Deletes a processing-time timer; returns whether it existed.
    pub fn delete_processing_time_timer(&mut self, key: K, namespace: N, at: Timestamp) -> bool {
        self.processing.delete((at, key, namespace))
    }

    /// Moves event time to `wm` (never backwards); due timers then come out of
    /// [`next_event_timer`](Self::next_event_timer).
    pub fn advance_watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
    }

    /// The next event-time timer due at the current watermark, removed from the service.
    pub fn next_event_timer(&mut self) -> Option<Timer<K, N>> {
        self.event.pop_due(self.watermark)
    }

    /// Moves processing time to `now` (never backwards); due timers then come out of
    /// [`next_processing_timer`](Self::next_processing_timer).
    pub fn advance_processing_time(&mut self, now: Timestamp) {
        self.processing_time = self.processing_time.max(now);
    }

    /// The next processing-time timer due at the current processing time, removed.
    pub fn next_processing_timer(&mut self) -> Option<Timer<K, N>> {
        self.processing.pop_due(self.processing_time)
    }

    /// Pending timers in one domain.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len(),
            TimeDomain::ProcessingTime => self.processing.len(),
        }
    }

    /// Whether no timer is pending in either domain.
    pub fn is_empty(&self) -> bool {
        self.event.len() == 0 && self.processing.len() == 0
    }

    /// Every pending timer, to bytes, grouped by key group.
    ///
    /// Format (all integers little-endian): `"SBTM"`, version `1` (u8), max parallelism
    /// (u32), number of key groups (u32), then per key group in increasing order: key
    /// group (u16), byte length of its records (u32), and its records, each: domain (u8:
    /// 0 event time, 1 processing time), timestamp (i64), key and namespace in their
    /// [`Codec`] encoding. Timers are written in (domain, timestamp, key, namespace)
    /// order, so a snapshot of the same timers is always the same bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        type Entry<'a, K, N> = (u8, Timestamp, &'a K, &'a N);
        let mut groups: BTreeMap<u16, Vec<Entry<'_, K, N>>> = BTreeMap::new();
        for (domain, q) in [(0u8, &self.event), (1u8, &self.processing)] {
            for (at, key, ns) in q.iter() {
                groups
                    .entry(key.key_group(self.max_parallelism).0)
                    .or_default()
                    .push((domain, at, key, ns));
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        (self.max_parallelism as u32).encode(&mut out);
        (groups.len() as u32).encode(&mut out);
        let mut records = Vec::new();
        for (kg, mut timers) in groups {
            timers.sort_unstable();
            records.clear();
            for (domain, ts, key, ns) in timers {
                records.push(domain);
                ts.millis().encode(&mut records);
                key.encode(&mut records);
                ns.encode(&mut records);
            }
            kg.encode(&mut out);
            (records.len() as u32).encode(&mut out);
            out.extend_from_slice(&records);
        }
        out
    }

    /// Adds the timers of `snapshot` whose key group is in `range`: restore from one
    /// snapshot, or from several (of the subtasks that owned `range` before a rescale).
    /// Timers already present are kept once. A malformed snapshot is an error, and then
    /// nothing of it is added.
    pub fn restore(&mut self, snapshot: &[u8], range: KeyGroupRange) -> Result<()> {
        let mut input = snapshot;
        if take(&mut input, 4, "magic")? != MAGIC {
            return Err(TimeError::Corrupt {
                reason: "not a timer snapshot (bad magic)".into(),
            });
        }
        let version = u8::decode(&mut input)?;
        if version != VERSION {
            return Err(TimeError::Corrupt {
                reason: format!("unsupported timer snapshot version {version}"),
            });
        }
        let max_p = u32::decode(&mut input)? as usize;
        if max_p != self.max_parallelism {
            return Err(TimeError::MaxParallelismMismatch {
                snapshot: max_p,
                expected: self.max_parallelism,
            });
        }
        let groups = u32::decode(&mut input)?;
        let mut restored = Vec::new();
        for _ in 0..groups {
            let kg = u16::decode(&mut input)?;
            let len = u32::decode(&mut input)? as usize;
            let mut records = take(&mut input, len, "key group records")?;
            if usize::from(kg) >= max_p {
                return Err(TimeError::Corrupt {
                    reason: format!("key group {kg} out of range 0..{max_p}"),
                });
            }
            if !range.contains(sabot_core::KeyGroup(kg)) {
                continue;
            }
            while !records.is_empty() {
                let domain = u8::decode(&mut records)?;
                let ts = Timestamp::from_millis(i64::decode(&mut records)?);
                let key = K::decode(&mut records)?;
                let ns = N::decode(&mut records)?;
                if key.key_group(max_p).0 != kg {
                    return Err(TimeError::Corrupt {
                        reason: format!("timer filed under key group {kg} belongs elsewhere"),
                    });
                }
                let domain = match domain {
                    0 => TimeDomain::EventTime,
                    1 => TimeDomain::ProcessingTime,
                    d => {
                        return Err(TimeError::Corrupt {
                            reason: format!("invalid time domain {d}"),
                        });
                    }
                };
                restored.push((domain, (ts, key, ns)));
            }
        }
        if !input.is_empty() {
            return Err(TimeError::Corrupt {
                reason: format!("{} unexpected bytes after the last key group", input.len()),
            });
        }
        for (domain, t) in restored {
            match domain {
                TimeDomain::EventTime => self.event.register(t),
                TimeDomain::ProcessingTime => self.processing.register(t),
            };
        }
        Ok(())
    }
}
