//! Typed keyed state over any backend: value, list, map, reducing and aggregating state,
//! with optional TTL in event or processing time.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sabot_core::key::hash_i64;
use sabot_core::{KeyGroup, KeyGroupRange, duration_millis};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{EntryKey, PendingSnapshot, Result, SnapshotInfo, StateBackend, StateError, StateId};

/// Which clock a TTL follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TtlDomain {
    /// Entries expire as the watermark passes (`KeyedState::set_event_time`).
    EventTime,
    /// Entries expire as processing time passes (`KeyedState::set_processing_time`).
    ProcessingTime,
}

/// Time to live of a state's entries, counted from their last write.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ttl {
    /// How long an entry lives after its last write, in ms.
    pub ttl_ms: i64,
    /// Against which clock.
    pub domain: TtlDomain,
}

impl Ttl {
    /// Entries expire `ttl` of event time after their last write.
    pub fn event_time(ttl: Duration) -> Self {
        Ttl {
            ttl_ms: duration_millis(ttl),
            domain: TtlDomain::EventTime,
        }
    }

    /// Entries expire `ttl` of processing time after their last write.
    pub fn processing_time(ttl: Duration) -> Self {
        Ttl {
            ttl_ms: duration_millis(ttl),
            domain: TtlDomain::ProcessingTime,
        }
    }
}

/// A state's name and options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDescriptor {
    name: String,
    ttl: Option<Ttl>,
    evictable: bool,
}

impl StateDescriptor {
    /// A state called `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        StateDescriptor {
            name: name.into(),
            ttl: None,
            evictable: false,
        }
    }

    /// Entries expire as `ttl` says: invisible once expired, removed by
    /// [`KeyedState::cleanup_expired`] and before every snapshot.
    pub fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Marks the state as a cache: a backend over its memory bound may drop its least
    /// recently used entries (a later read finds nothing), see
    /// [`MemoryBackend::with_eviction_bound`](crate::MemoryBackend::with_eviction_bound).
    /// Only for state that can be recomputed or lost: the default is never to evict.
    pub fn evictable(mut self) -> Self {
        self.evictable = true;
        self
    }
}

/// The value layout recorded in snapshots: restoring with another one is an error.
fn fingerprint<T>(kind: &str, ttl: Option<Ttl>) -> String {
    format!(
        "{kind}<{}>/postcard-1{}",
        std::any::type_name::<T>(),
        if ttl.is_some() { "/ttl" } else { "" }
    )
}

#[derive(Clone, Debug)]
struct Registered {
    id: StateId,
    name: String,
    ttl: Option<Ttl>,
    /// How entries are laid out, for cleanup.
    layout: Layout,
}

impl Registered {
    /// A codec error of this state.
    fn codec_error(&self, source: postcard::Error) -> StateError {
        StateError::Codec {
            state: self.name.clone(),
            source,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// One value per (key, namespace): `[expiry]` + payload.
    Single,
    /// A list: elements `[len u32] [expiry] payload`, appended by merge.
    List,
    /// A map: one entry per (key, namespace ++ map key): `[expiry]` + payload.
    Map,
}

/// Keyed state over a [`StateBackend`]: set the current key (and namespace), then read
/// and write through typed state handles.
///
/// Values are encoded with `postcard` (a compact, documented serde format: varints,
/// length-prefixed strings); with a TTL, each value (each list element) is prefixed with
/// its expiry time as an 8-byte little-endian integer.
///
/// ```
/// use sabot_core::KeyGroupRange;
/// use sabot_state::{KeyedState, MemoryBackend, StateDescriptor};
///
/// let backend = MemoryBackend::new(128, KeyGroupRange::for_subtask(128, 1, 0));
/// let mut st = KeyedState::new(backend, 128);
/// let total = st.value_state::<u64>(StateDescriptor::new("total")).unwrap();
/// st.set_current_key_i64(42);
/// let t = total.get(&mut st).unwrap().unwrap_or(0);
/// total.update(&mut st, &(t + 5)).unwrap();
/// assert_eq!(total.get(&mut st).unwrap(), Some(5));
/// ```
#[derive(Debug)]
pub struct KeyedState<B: StateBackend> {
    backend: B,
    max_parallelism: usize,
    kg: KeyGroup,
    /// The current key and namespace, encoded and hashed once for every access.
    entry: EntryKey,
    /// Scratch for prefetch hints.
    ahead: EntryKey,
    event_time: i64,
    processing_time: i64,
    states: Vec<Registered>,
    buf: Vec<u8>,
    enc: Vec<u8>,
    scratch_ns: Vec<u8>,
}

impl<B: StateBackend> KeyedState<B> {
    /// Typed state over `backend`, whose keys spread over `max_parallelism` key groups.
    pub fn new(backend: B, max_parallelism: usize) -> Self {
        KeyedState {
            backend,
            max_parallelism,
            kg: KeyGroup(0),
            entry: EntryKey::default(),
            ahead: EntryKey::default(),
            event_time: i64::MIN,
            processing_time: i64::MIN,
            states: Vec::new(),
            buf: Vec::new(),
            enc: Vec::new(),
            scratch_ns: Vec::new(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Sets the current key: its key group and its bytes.
    #[inline]
    pub fn set_current_key(&mut self, kg: KeyGroup, key: &[u8]) {
        self.kg = kg;
        self.entry.set_key(key);
    }

    /// Sets the current key to an integer key, in the key group an `Int64` key column
    /// with this value has (see `sabot_core::key`).
    #[inline]
    pub fn set_current_key_i64(&mut self, key: i64) {
        let kg = KeyGroup::of_hash(hash_i64(key), self.max_parallelism);
        self.set_current_key(kg, &key.to_le_bytes());
    }

    /// A hint that `key` (in key group `kg`) will soon be the current key: the backend
    /// may start loading its value, list, reducing and aggregating states in the current
    /// namespace now (see [`StateBackend::prefetch_entry`]). A loop over many keys that calls
    /// this a few keys ahead overlaps their memory loads; the results never change.
    #[inline]
    pub fn prefetch_key(&mut self, kg: KeyGroup, key: &[u8]) {
        self.ahead.set(key, self.entry.namespace());
        for s in &self.states {
            if s.layout != Layout::Map {
                self.backend.prefetch_entry(s.id, kg, &self.ahead);
            }
        }
    }

    /// [`prefetch_key`](Self::prefetch_key) for an integer key, as
    /// [`set_current_key_i64`](Self::set_current_key_i64) would set it.
    #[inline]
    pub fn prefetch_key_i64(&mut self, key: i64) {
        let kg = KeyGroup::of_hash(hash_i64(key), self.max_parallelism);
        self.prefetch_key(kg, &key.to_le_bytes());
    }

    /// Sets the current namespace (a window, say); empty by default.
    pub fn set_namespace(&mut self, namespace: &[u8]) {
        self.entry.set_namespace(namespace);
    }

    /// The current event time (the watermark), for event-time TTL.
    pub fn set_event_time(&mut self, ms: i64) {
        self.event_time = self.event_time.max(ms);
    }

    /// The current processing time, for processing-time TTL.
    pub fn set_processing_time(&mut self, ms: i64) {
        self.processing_time = self.processing_time.max(ms);
    }

    fn now(&self, domain: TtlDomain) -> i64 {
        match domain {
            TtlDomain::EventTime => self.event_time,
            TtlDomain::ProcessingTime => self.processing_time,
        }
    }

    fn register<T>(
        &mut self,
        kind: &str,
        desc: StateDescriptor,
        layout: Layout,
    ) -> Result<Registered> {
        let id = self
            .backend
            .register(&desc.name, &fingerprint::<T>(kind, desc.ttl))?;
        if desc.evictable {
            self.backend.set_evictable(id)?;
        }
        let r = Registered {
            id,
            name: desc.name,
            ttl: desc.ttl,
            layout,
        };
        self.states.retain(|s| s.id != id);
        self.states.push(r.clone());
        Ok(r)
    }

    /// A single value per key and namespace.
    pub fn value_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: StateDescriptor,
    ) -> Result<ValueState<T>> {
        Ok(ValueState {
            reg: self.register::<T>("value", desc, Layout::Single)?,
            _t: PhantomData,
        })
    }

    /// A list per key and namespace; `add` appends without reading.
    pub fn list_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: StateDescriptor,
    ) -> Result<ListState<T>> {
        Ok(ListState {
            reg: self.register::<T>("list", desc, Layout::List)?,
            _t: PhantomData,
        })
    }

    /// A map per key and namespace.
    pub fn map_state<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &mut self,
        desc: StateDescriptor,
    ) -> Result<MapState<K, V>> {
        let reg = self.register::<(K, V)>("map", desc, Layout::Map)?;
        // Entries are listed by scanning the key's namespaces.
        self.backend.index_for_scans(reg.id)?;
        Ok(MapState {
            reg,
            _t: PhantomData,
        })
    }

    /// A value folded with `reduce` on every `add`.
    pub fn reducing_state<T: Serialize + DeserializeOwned>(
        &mut self,
        desc: StateDescriptor,
        reduce: impl Fn(T, T) -> T + Send + Sync + 'static,
    ) -> Result<ReducingState<T>> {
        Ok(ReducingState {
            reg: self.register::<T>("reducing", desc, Layout::Single)?,
            reduce: Arc::new(reduce),
        })
    }

    /// An accumulator updated by `agg` on every `add`, read through `agg`'s result.
    pub fn aggregating_state<A: AggregateFunction>(
        &mut self,
        desc: StateDescriptor,
        agg: A,
    ) -> Result<AggregatingState<A>> {
        Ok(AggregatingState {
            reg: self.register::<A::Acc>("aggregating", desc, Layout::Single)?,
            agg,
        })
    }

    // --- byte-level helpers with TTL ---

    /// The expiry a value written now gets, for a state with a TTL.
    fn expiry(&self, reg: &Registered) -> Option<i64> {
        Some(self.ttl_now(reg)?.saturating_add(reg.ttl?.ttl_ms))
    }

    fn encode<T: Serialize>(&mut self, reg: &Registered, v: &T) -> Result<()> {
        self.enc.clear();
        if let Some(expiry) = self.expiry(reg) {
            self.enc.extend_from_slice(&expiry.to_le_bytes());
        }
        let enc = std::mem::take(&mut self.enc);
        let enc = postcard::to_extend(v, enc).map_err(|e| reg.codec_error(e))?;
        self.enc = enc;
        Ok(())
    }

    /// Strips and checks the expiry: `None` if expired.
    fn live<'a>(&self, reg: &Registered, bytes: &'a [u8]) -> Option<&'a [u8]> {
        live_at(self.ttl_now(reg), bytes)
    }

    /// The time in the domain of the state's TTL; `None` without a TTL.
    fn ttl_now(&self, reg: &Registered) -> Option<i64> {
        reg.ttl.map(|ttl| self.now(ttl.domain))
    }

    fn decode<T: DeserializeOwned>(reg: &Registered, bytes: &[u8]) -> Result<T> {
        postcard::from_bytes(bytes).map_err(|e| reg.codec_error(e))
    }

    fn get_single<T: DeserializeOwned>(&mut self, reg: &Registered) -> Result<Option<T>> {
        let now = self.ttl_now(reg);
        let mut out: Option<Result<T>> = None;
        let mut expired = false;
        // Decoded where the backend holds it: no copy of the bytes.
        self.backend
            .read_entry(
                reg.id,
                self.kg,
                &self.entry,
                &mut |bytes| match live_at(now, bytes) {
                    Some(payload) => out = Some(Self::decode(reg, payload)),
                    None => expired = true,
                },
            )?;
        if expired {
            // Invisible, and gone now.
            self.backend.delete_entry(reg.id, self.kg, &self.entry)?;
        }
        out.transpose()
    }

    fn put_single<T: Serialize>(&mut self, reg: &Registered, v: &T) -> Result<()> {
        // Small values are encoded on the stack, larger ones in the reused buffer.
        let mut stack = [0u8; 64];
        let mut at = 0;
        if let Some(expiry) = self.expiry(reg) {
            stack[..8].copy_from_slice(&expiry.to_le_bytes());
            at = 8;
        }
        let len = match postcard::serialize_with_flavor(v, StackFlavor::new(&mut stack[at..])) {
            Ok(used) => used,
            Err(postcard::Error::SerializeBufferFull) => {
                self.encode(reg, v)?;
                return self
                    .backend
                    .put_entry(reg.id, self.kg, &self.entry, &self.enc);
            }
            Err(source) => return Err(reg.codec_error(source)),
        };
        self.backend
            .put_entry(reg.id, self.kg, &self.entry, &stack[..at + len])
    }

    fn clear_single(&mut self, reg: &Registered) -> Result<()> {
        self.backend.delete_entry(reg.id, self.kg, &self.entry)?;
        Ok(())
    }

    /// Removes every expired entry of every state with a TTL, in every key group of the
    /// backend; returns how many entries (or list elements) were removed. Runs before
    /// every [`snapshot`](Self::snapshot); call it periodically for background cleanup.
    pub fn cleanup_expired(&mut self) -> Result<u64> {
        let mut removed = 0;
        let range = self.backend.key_groups();
        for reg in self.states.clone() {
            let Some(ttl) = reg.ttl else { continue };
            let now = self.now(ttl.domain);
            for kg in range.start..range.end {
                let kg = KeyGroup(kg);
                let mut deletes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let mut rewrites: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
                self.backend.scan_key_group(reg.id, kg, &mut |k, ns, v| {
                    match reg.layout {
                        Layout::Single | Layout::Map => {
                            let expired = v
                                .get(..8)
                                .and_then(|b| b.try_into().ok())
                                .is_none_or(|b| i64::from_le_bytes(b) <= now);
                            if expired {
                                deletes.push((k.to_vec(), ns.to_vec()));
                            }
                        }
                        Layout::List => {
                            let (kept, dropped) = filter_list(v, now);
                            if dropped > 0 {
                                removed += dropped;
                                rewrites.push((k.to_vec(), ns.to_vec(), kept));
                            }
                        }
                    }
                    true
                })?;
                for (k, ns) in deletes {
                    removed += u64::from(self.backend.delete(reg.id, kg, &k, &ns)?);
                }
                for (k, ns, kept) in rewrites {
                    if kept.is_empty() {
                        self.backend.delete(reg.id, kg, &k, &ns)?;
                    } else {
                        self.backend.put(reg.id, kg, &k, &ns, &kept)?;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Removes expired entries, then snapshots every key group of the backend into `dir`.
    pub fn snapshot(&mut self, dir: &Path) -> Result<SnapshotInfo> {
        self.cleanup_expired()?;
        let range = self.backend.key_groups();
        self.backend.snapshot(dir, range)
    }

    /// The key groups this state holds (its backend's).
    pub fn key_groups(&self) -> KeyGroupRange {
        self.backend.key_groups()
    }

    /// [`snapshot`](Self::snapshot) with the writing deferred where the backend allows
    /// ([`StateBackend::snapshot_async`]); expired entries are removed first.
    pub fn snapshot_async(&mut self, dir: &Path) -> Result<PendingSnapshot> {
        self.cleanup_expired()?;
        let range = self.backend.key_groups();
        self.backend.snapshot_async(dir, range)
    }

    /// Restores the backend's key groups from `dirs`.
    pub fn restore(&mut self, dirs: &[PathBuf]) -> Result<()> {
        self.backend.restore(dirs)
    }
}

/// A postcard output into a fixed buffer (on the stack), like postcard's own slice
/// flavor but copying the few bytes of a varint without a call into the C library.
struct StackFlavor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> StackFlavor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        StackFlavor { buf, at: 0 }
    }
}

impl postcard::ser_flavors::Flavor for StackFlavor<'_> {
    /// Bytes written.
    type Output = usize;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.at + data.len();
        let dst = self
            .buf
            .get_mut(self.at..end)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        crate::bytes::short_copy(dst, data);
        self.at = end;
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        *self
            .buf
            .get_mut(self.at)
            .ok_or(postcard::Error::SerializeBufferFull)? = data;
        self.at += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.at)
    }
}

/// Strips and checks the expiry of a value of a state with a TTL, `now` being the time
/// in its domain (`None`: no TTL, the bytes are the payload). `None` if expired.
#[inline]
fn live_at(now: Option<i64>, bytes: &[u8]) -> Option<&[u8]> {
    match now {
        None => Some(bytes),
        Some(now) => {
            let expiry = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
            (expiry > now).then(|| &bytes[8..])
        }
    }
}

/// Sets `out` to the start of every map entry's namespace in the current namespace: its
/// length (u32 LE) and bytes; the encoded map key follows.
fn namespace_prefix<B: StateBackend>(st: &KeyedState<B>, out: &mut Vec<u8>) {
    let ns = st.entry.namespace();
    out.clear();
    out.extend_from_slice(&(ns.len() as u32).to_le_bytes());
    out.extend_from_slice(ns);
}

/// Splits a TTL list value into its live elements; returns (kept bytes, dropped count).
fn filter_list(v: &[u8], now: i64) -> (Vec<u8>, u64) {
    let mut kept = Vec::with_capacity(v.len());
    let mut dropped = 0;
    let mut rest = v;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(elem) = rest.get(4..4 + len) else {
            break;
        };
        let live = elem
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .is_some_and(|b| i64::from_le_bytes(b) > now);
        if live {
            kept.extend_from_slice(&rest[..4 + len]);
        } else {
            dropped += 1;
        }
        rest = &rest[4 + len..];
    }
    (kept, dropped)
}

/// A single value per key and namespace.
#[derive(Debug)]
pub struct ValueState<T> {
    reg: Registered,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The backend state this value state lives in.
    pub fn id(&self) -> StateId {
        self.reg.id
    }

    /// The current key's value.
    pub fn get<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<T>> {
        st.get_single(&self.reg)
    }

    /// Sets the current key's value.
    pub fn update<B: StateBackend>(&self, st: &mut KeyedState<B>, value: &T) -> Result<()> {
        st.put_single(&self.reg, value)
    }

    /// Removes the current key's value.
    pub fn clear<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        st.clear_single(&self.reg)
    }
}

/// A list per key and namespace.
#[derive(Debug)]
pub struct ListState<T> {
    reg: Registered,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// Appends `value` (a merge: no read of the existing list).
    pub fn add<B: StateBackend>(&self, st: &mut KeyedState<B>, value: &T) -> Result<()> {
        st.encode(&self.reg, value)?;
        let mut elem = Vec::with_capacity(4 + st.enc.len());
        elem.extend_from_slice(&(st.enc.len() as u32).to_le_bytes());
        elem.extend_from_slice(&st.enc);
        st.backend.merge_entry(self.reg.id, st.kg, &st.entry, &elem)
    }

    /// The current key's live elements, in insertion order.
    pub fn get<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<T>> {
        let mut buf = std::mem::take(&mut st.buf);
        let found = st
            .backend
            .get_entry(self.reg.id, st.kg, &st.entry, &mut buf)?;
        let mut out = Vec::new();
        if found {
            let mut rest = &buf[..];
            while !rest.is_empty() {
                let corrupt = || {
                    self.reg
                        .codec_error(postcard::Error::DeserializeUnexpectedEnd)
                };
                let len = u32::from_le_bytes(
                    rest.get(..4)
                        .ok_or_else(corrupt)?
                        .try_into()
                        .map_err(|_| corrupt())?,
                ) as usize;
                let elem = rest.get(4..4 + len).ok_or_else(corrupt)?;
                if let Some(payload) = st.live(&self.reg, elem) {
                    out.push(KeyedState::<B>::decode(&self.reg, payload)?);
                }
                rest = &rest[4 + len..];
            }
        }
        st.buf = buf;
        Ok(out)
    }

    /// Replaces the current key's list.
    pub fn update<B: StateBackend>(&self, st: &mut KeyedState<B>, values: &[T]) -> Result<()> {
        self.clear(st)?;
        values.iter().try_for_each(|v| self.add(st, v))
    }

    /// Removes the current key's list.
    pub fn clear<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        st.clear_single(&self.reg)
    }
}

/// A map per key and namespace, one backend entry per map entry.
#[derive(Debug)]
pub struct MapState<K, V> {
    reg: Registered,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    fn entry_ns<B: StateBackend>(&self, st: &mut KeyedState<B>, k: &K) -> Result<Vec<u8>> {
        let mut ns = std::mem::take(&mut st.scratch_ns);
        namespace_prefix(st, &mut ns);
        postcard::to_extend(k, ns).map_err(|e| self.reg.codec_error(e))
    }

    /// The value under map key `k`.
    pub fn get<B: StateBackend>(&self, st: &mut KeyedState<B>, k: &K) -> Result<Option<V>> {
        let ns = self.entry_ns(st, k)?;
        let mut buf = std::mem::take(&mut st.buf);
        let found = st
            .backend
            .get(self.reg.id, st.kg, st.entry.key(), &ns, &mut buf)?;
        let out = match found.then(|| st.live(&self.reg, &buf)).flatten() {
            Some(payload) => Some(KeyedState::<B>::decode(&self.reg, payload)?),
            None => None,
        };
        st.buf = buf;
        st.scratch_ns = ns;
        Ok(out)
    }

    /// Sets map key `k` to `v`.
    pub fn put<B: StateBackend>(&self, st: &mut KeyedState<B>, k: &K, v: &V) -> Result<()> {
        let ns = self.entry_ns(st, k)?;
        st.encode(&self.reg, v)?;
        let r = st
            .backend
            .put(self.reg.id, st.kg, st.entry.key(), &ns, &st.enc);
        st.scratch_ns = ns;
        r
    }

    /// Removes map key `k`; returns whether it was there.
    pub fn remove<B: StateBackend>(&self, st: &mut KeyedState<B>, k: &K) -> Result<bool> {
        let ns = self.entry_ns(st, k)?;
        let r = st.backend.delete(self.reg.id, st.kg, st.entry.key(), &ns);
        st.scratch_ns = ns;
        r
    }

    /// Every live entry, in the byte order of the encoded map keys.
    pub fn entries<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<Vec<(K, V)>> {
        let mut prefix = Vec::new();
        namespace_prefix(st, &mut prefix);
        let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        st.backend
            .scan(self.reg.id, st.kg, st.entry.key(), &prefix, &mut |ns, v| {
                raw.push((ns[prefix.len()..].to_vec(), v.to_vec()));
                true
            })?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            if let Some(payload) = st.live(&self.reg, &v) {
                out.push((
                    KeyedState::<B>::decode(&self.reg, &k)?,
                    KeyedState::<B>::decode(&self.reg, payload)?,
                ));
            }
        }
        Ok(out)
    }
}

/// A value folded with a reduce function on every `add`.
pub struct ReducingState<T> {
    reg: Registered,
    reduce: Arc<dyn Fn(T, T) -> T + Send + Sync>,
}

impl<T> std::fmt::Debug for ReducingState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("state", &self.reg.name)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    /// Folds `value` into the current key's value.
    pub fn add<B: StateBackend>(&self, st: &mut KeyedState<B>, value: T) -> Result<()> {
        let next = match st.get_single::<T>(&self.reg)? {
            Some(cur) => (self.reduce)(cur, value),
            None => value,
        };
        st.put_single(&self.reg, &next)
    }

    /// The current key's value.
    pub fn get<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<T>> {
        st.get_single(&self.reg)
    }

    /// Removes the current key's value.
    pub fn clear<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        st.clear_single(&self.reg)
    }
}

/// An aggregation over the values added to an [`AggregatingState`].
pub trait AggregateFunction: Send + Sync {
    /// What is added.
    type In;
    /// The accumulator, as stored.
    type Acc: Serialize + DeserializeOwned;
    /// What is read.
    type Out;
    /// A fresh accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one value.
    fn add(&self, acc: Self::Acc, value: Self::In) -> Self::Acc;
    /// The result of an accumulator.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// An accumulator per key and namespace, updated by an [`AggregateFunction`].
#[derive(Debug)]
pub struct AggregatingState<A> {
    reg: Registered,
    agg: A,
}

impl<A: AggregateFunction> AggregatingState<A> {
    /// Adds `value` to the current key's accumulator.
    pub fn add<B: StateBackend>(&self, st: &mut KeyedState<B>, value: A::In) -> Result<()> {
        let acc = st
            .get_single::<A::Acc>(&self.reg)?
            .unwrap_or_else(|| self.agg.create());
        st.put_single(&self.reg, &self.agg.add(acc, value))
    }

    /// The current key's result, if anything was added.
    pub fn get<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<Option<A::Out>> {
        Ok(st
            .get_single::<A::Acc>(&self.reg)?
            .map(|acc| self.agg.result(&acc)))
    }

    /// Removes the current key's accumulator.
    pub fn clear<B: StateBackend>(&self, st: &mut KeyedState<B>) -> Result<()> {
        st.clear_single(&self.reg)
    }
}
