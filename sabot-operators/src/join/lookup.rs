//! The lookup join: left rows look up a table kept from the right input's changelog.

use sabot_core::arrow::array::{Array, AsArray, StringArray};
use sabot_core::arrow::datatypes::DataType;
use sabot_core::key::KeyGroup;
use sabot_core::metrics::Counter;
use sabot_core::{CoreError, RecordBatch, SchemaRef, Timestamp, column_index};
use sabot_state::{StateBackend, StateId};
use sabot_time::TimerService;

use super::rows::{Pairs, SideRows, bad_entry, entry, split_namespace, time_key, write_entry};
use super::{JOIN_LATE_RECORDS_DROPPED, JoinColumns, JoinType, join_columns, side_fingerprint};
use crate::keys::KeyColumns;
use crate::time_column::{check_time_field, event_times};
use crate::{Operator, OperatorError, Output, Result, TaskContext, TwoInputOperatorFactory};

/// A lookup join against a table: the right input is the table's changelog (each row
/// an upsert of its key's version, or a deletion where its op column says `-D` or
/// `-U`), and every left row is joined with its key's version in the table (Flink's
/// temporal table join).
///
/// - In event time ([`event_time`](Self::event_time)): a left row at time `t` joins the
///   version of its key with the largest version time `<= t` (if it is not a deletion),
///   once the watermark passes `t`; so the result does not depend on which input runs
///   ahead. Versions that no future left row can see are deleted as the watermark
///   moves, left rows once joined. Rows of either input at or behind the watermark when
///   they come are dropped and counted ([`JOIN_LATE_RECORDS_DROPPED`]): the left rows up
///   to the watermark have joined already.
/// - In processing time (the default): a left row joins its key's current version at
///   once; the table keeps one version per key.
///
/// A left outer lookup join emits a left row whose key has no version with nulls.
///
/// ```
/// use sabot_core::metrics::Metrics;
/// use sabot_core::Message;
/// use sabot_test_kit::int64_batch;
/// use sabot_operators::{LookupJoinFactory, Output, TaskContext, TwoInputOperatorFactory};
///
/// let orders = int64_batch(&[("currency", vec![1, 2]), ("amount", vec![10, 20])]);
/// let rates = int64_batch(&[("currency", vec![1]), ("rate", vec![3])]);
/// let join = LookupJoinFactory::new(&["currency"], &["currency"]);
/// let ctx = TaskContext::new(0, 1, 128, Metrics::new());
/// let mut op = join.create(&orders.schema(), &rates.schema(), &ctx).unwrap();
/// let mut out = Output::new();
/// op.on_batch_from(1, rates, &mut out).unwrap();
/// op.on_batch_from(0, orders, &mut out).unwrap();
/// let Some(Message::Data(joined)) = out.drain().next() else { panic!() };
/// assert_eq!(joined.num_rows(), 1); // currency 1 has a rate; currency 2 has none
/// ```
#[derive(Clone, Debug)]
pub struct LookupJoinFactory {
    left_keys: Vec<String>,
    right_keys: Vec<String>,
    /// The left input's event time and the right input's version time.
    times: Option<(Option<String>, Option<String>)>,
    op_column: Option<String>,
    join_type: JoinType,
}

impl LookupJoinFactory {
    /// A processing-time lookup join of the left input's `left_keys` on the table keyed
    /// by the right input's `right_keys`.
    pub fn new(left_keys: &[&str], right_keys: &[&str]) -> Self {
        LookupJoinFactory {
            left_keys: left_keys.iter().map(|k| (*k).to_owned()).collect(),
            right_keys: right_keys.iter().map(|k| (*k).to_owned()).collect(),
            times: None,
            op_column: None,
            join_type: JoinType::Inner,
        }
    }

    /// Joins in event time: the left input's event time `left_time`, the right input's
    /// version time `version_time` (`None`: that input has no event time, a build error).
    pub fn event_time(mut self, left_time: Option<&str>, version_time: Option<&str>) -> Self {
        self.times = Some((
            left_time.map(str::to_owned),
            version_time.map(str::to_owned),
        ));
        self
    }

    /// The right input's `Utf8` column that says what each changelog row does: `-D` and
    /// `-U` delete the key's version, anything else upserts it (default: every row is an
    /// upsert).
    pub fn with_op_column(mut self, column: &str) -> Self {
        self.op_column = Some(column.to_owned());
        self
    }

    /// Emits what [`JoinType`] says (default: inner).
    pub fn with_join_type(mut self, join_type: JoinType) -> Self {
        self.join_type = join_type;
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> OperatorError {
        OperatorError::invalid_plan(self.name(), reason)
    }

    fn bind(&self, left: &SchemaRef, right: &SchemaRef) -> Result<Bound> {
        let cols = join_columns(
            &self.name(),
            left,
            right,
            &self.left_keys,
            &self.right_keys,
            self.join_type,
            Vec::new(),
        )?;
        let times = match &self.times {
            None => None,
            Some((l, r)) => {
                let idx = |col: &Option<String>, schema: &SchemaRef, side: &str| {
                    let col = col.as_ref().ok_or_else(|| {
                        self.invalid(format!(
                            "the {side} input has no event time: call with_watermarks(..) before the join"
                        ))
                    })?;
                    let i = column_index(schema, col)?;
                    check_time_field(schema.field(i))?;
                    Ok::<usize, OperatorError>(i)
                };
                Some((idx(l, left, "left")?, idx(r, right, "right")?))
            }
        };
        let op = match &self.op_column {
            None => None,
            Some(c) => {
                let i = column_index(right, c)?;
                if right.field(i).data_type() != &DataType::Utf8 {
                    return Err(CoreError::InvalidColumnType {
                        column: c.clone(),
                        expected: "Utf8 changelog ops (+I, -D, ...)".into(),
                        actual: right.field(i).data_type().clone(),
                    }
                    .into());
                }
                Some(i)
            }
        };
        Ok(Bound { cols, times, op })
    }
}

struct Bound {
    cols: JoinColumns,
    times: Option<(usize, usize)>,
    op: Option<usize>,
}

impl TwoInputOperatorFactory for LookupJoinFactory {
    fn name(&self) -> String {
        format!(
            "{}lookup_join({:?} = {:?}{})",
            match self.join_type {
                JoinType::Inner => "",
                JoinType::LeftOuter => "left_outer_",
            },
            self.left_keys,
            self.right_keys,
            if self.times.is_some() {
                ", event time"
            } else {
                ""
            }
        )
    }

    fn output_schema(&self, left: &SchemaRef, right: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.bind(left, right)?.cols.schema)
    }

    fn partition_keys(&self) -> Option<(Vec<String>, Vec<String>)> {
        Some((self.left_keys.clone(), self.right_keys.clone()))
    }

    fn create(
        &self,
        left: &SchemaRef,
        right: &SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Box<dyn Operator>> {
        let b = self.bind(left, right)?;
        let mut backend = ctx.open_state(&format!(
            "lookup-{}-{}",
            self.left_keys.join("-"),
            self.right_keys.join("-")
        ))?;
        let probes = backend.register(
            "lookup.left",
            &side_fingerprint("lookup-left", left, &b.cols.left_keys),
        )?;
        let versions = backend.register(
            "lookup.versions",
            &side_fingerprint("lookup-versions", right, &b.cols.right_keys),
        )?;
        backend.index_for_scans(probes)?;
        backend.index_for_scans(versions)?;
        Ok(Box::new(LookupJoinOp {
            left_keys: KeyColumns::new(left, b.cols.left_keys.clone())?,
            right_keys: KeyColumns::new(right, b.cols.right_keys.clone())?,
            left_rows: SideRows::new(left)?,
            right_rows: SideRows::new(right)?,
            name: self.name(),
            outer: self.join_type == JoinType::LeftOuter,
            bound: b,
            backend,
            probes,
            versions,
            timers: TimerService::new(ctx.max_parallelism),
            max_parallelism: ctx.max_parallelism,
            watermark: Timestamp::MIN,
            late: ctx.metrics.counter(JOIN_LATE_RECORDS_DROPPED),
            hashes: Vec::new(),
            key: Vec::new(),
            ns: Vec::new(),
        }))
    }
}

/// Per (key group, key): a timer at a left row's time (`false`: join the rows due) or
/// at a version's time (`true`: prune versions nobody can see any more).
type Timers = TimerService<(KeyGroup, Vec<u8>), bool>;

struct LookupJoinOp {
    left_keys: KeyColumns,
    right_keys: KeyColumns,
    left_rows: SideRows,
    right_rows: SideRows,
    name: String,
    outer: bool,
    bound: Bound,
    backend: Box<dyn StateBackend>,
    /// Left rows waiting for the watermark (event time only): namespace = time + row,
    /// value = count and 0 (the stored-entry layout of the other joins).
    probes: StateId,
    /// The table: namespace = version time (event time; empty in processing time),
    /// value = 1 byte (1: deleted) + the row.
    versions: StateId,
    timers: Timers,
    max_parallelism: usize,
    watermark: Timestamp,
    late: Counter,
    hashes: Vec<u64>,
    key: Vec<u8>,
    ns: Vec<u8>,
}

/// A stored version: whether it is a deletion, and the row.
fn version(value: &[u8]) -> Option<(bool, &[u8])> {
    let (&deleted, row) = value.split_first()?;
    Some((deleted != 0, row))
}

impl LookupJoinOp {
    fn event_time(&self) -> bool {
        self.bound.times.is_some()
    }

    fn emit(&self, pairs: &mut Pairs, out: &mut Output) -> Result<()> {
        if let Some(b) = pairs.finish(
            &self.left_rows,
            &self.right_rows,
            &self.bound.cols.right_out,
            &self.bound.cols.schema,
        )? {
            out.batch(b);
        }
        Ok(())
    }

    /// The version of `key` current at `at` (the newest in processing time): appends
    /// its row to `pairs` and returns its index there.
    fn lookup(&self, kg: KeyGroup, key: &[u8], at: i64, pairs: &mut Pairs) -> Result<Option<u32>> {
        let mut found: Option<(bool, Vec<u8>)> = None;
        let mut bad = false;
        self.backend
            .scan(self.versions, kg, key, b"", &mut |ns, value| {
                let t = split_namespace(ns).map_or(i64::MIN, |(t, _)| t);
                if t > at {
                    return false;
                }
                match version(value) {
                    Some((deleted, row)) => found = Some((deleted, row.to_vec())),
                    None => bad = true,
                }
                !bad
            })?;
        if bad {
            return Err(bad_entry(&self.name, "empty table version"));
        }
        Ok(match found {
            Some((false, row)) => Some(pairs.add_right(&row)),
            _ => None,
        })
    }

    fn on_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let keys = self.left_keys.of(&batch, &mut self.hashes)?;
        let rows = self.left_rows.encode(&batch)?;
        let times = self
            .bound
            .times
            .map(|(l, _)| event_times(batch.column(l)))
            .transpose()?;
        let mut pairs = Pairs::new(0, false);
        for row in 0..batch.num_rows() {
            let kg = KeyGroup::of_hash(self.hashes[row], self.max_parallelism);
            self.key.clear();
            keys.write(row, &mut self.key);
            let me = rows.row(row);
            let Some(times) = &times else {
                // Processing time: the current version, now.
                let key = std::mem::take(&mut self.key);
                let found = self.lookup(kg, &key, i64::MAX, &mut pairs)?;
                self.key = key;
                if found.is_some() || self.outer {
                    pairs.push(me.as_ref(), found, &[], 1, false);
                }
                continue;
            };
            let ts = time_value(times, row, &self.name)?;
            if Timestamp::from_millis(ts) <= self.watermark {
                self.late.add(1);
                continue;
            }
            // Wait until the table is complete up to `ts`.
            self.ns.clear();
            self.ns.extend_from_slice(&time_key(ts));
            self.ns.extend_from_slice(me.as_ref());
            let mut err = None;
            self.backend
                .update(self.probes, kg, &self.key, &self.ns, &mut |old, new| {
                    let count = match old.map(entry) {
                        None => 0,
                        Some(Some((c, _))) => c,
                        Some(None) => {
                            err = Some("stored value too short");
                            0
                        }
                    };
                    write_entry(new, count.saturating_add(1), 0);
                    Ok(())
                })?;
            if let Some(what) = err {
                return Err(bad_entry(&self.name, what));
            }
            self.timers.register_event_time_timer(
                (kg, self.key.clone()),
                false,
                Timestamp::from_millis(ts),
            );
        }
        self.emit(&mut pairs, out)
    }

    fn on_right(&mut self, batch: RecordBatch) -> Result<()> {
        let keys = self.right_keys.of(&batch, &mut self.hashes)?;
        let rows = self.right_rows.encode(&batch)?;
        let times = self
            .bound
            .times
            .map(|(_, r)| event_times(batch.column(r)))
            .transpose()?;
        let ops: Option<StringArray> = self
            .bound
            .op
            .map(|i| batch.column(i).as_string::<i32>().clone());
        let mut value = Vec::new();
        for row in 0..batch.num_rows() {
            let kg = KeyGroup::of_hash(self.hashes[row], self.max_parallelism);
            self.key.clear();
            keys.write(row, &mut self.key);
            let deleted = ops
                .as_ref()
                .is_some_and(|o| o.is_valid(row) && matches!(o.value(row), "-D" | "-U"));
            self.ns.clear();
            if let Some(times) = &times {
                let ts = time_value(times, row, &self.name)?;
                if Timestamp::from_millis(ts) <= self.watermark {
                    // Left rows up to the watermark have joined already.
                    self.late.add(1);
                    continue;
                }
                self.ns.extend_from_slice(&time_key(ts));
                // Prune what this version hides once the watermark passes it.
                self.timers.register_event_time_timer(
                    (kg, self.key.clone()),
                    true,
                    Timestamp::from_millis(ts),
                );
            } else if deleted {
                self.backend
                    .delete(self.versions, kg, &self.key, &self.ns)?;
                continue;
            }
            value.clear();
            value.push(u8::from(deleted));
            value.extend_from_slice(rows.row(row).as_ref());
            self.backend
                .put(self.versions, kg, &self.key, &self.ns, &value)?;
        }
        Ok(())
    }

    /// The watermark reached `wm`: left rows up to it join their versions; versions
    /// hidden behind a newer one at or before `wm` go.
    fn fire(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        self.timers.advance_watermark(wm);
        let mut pairs = Pairs::new(0, false);
        let mut done: Vec<(i64, Vec<u8>, u32)> = Vec::new();
        while let Some(t) = self.timers.next_event_timer() {
            let (kg, key) = t.key;
            // Timers fire in time order, and left rows before versions of the same time:
            // at `now`, every left row up to `now` has joined.
            let now = t.timestamp.millis();
            if t.namespace {
                self.prune(kg, &key, now)?;
                continue;
            }
            let mut bad = false;
            self.backend
                .scan(self.probes, kg, &key, b"", &mut |ns, value| {
                    let (Some((ts, row)), Some((count, _))) = (split_namespace(ns), entry(value))
                    else {
                        bad = true;
                        return false;
                    };
                    if ts > now {
                        return false;
                    }
                    done.push((ts, row.to_vec(), count));
                    true
                })?;
            if bad {
                return Err(bad_entry(&self.name, "malformed waiting row"));
            }
            for (ts, row, count) in done.drain(..) {
                let found = self.lookup(kg, &key, ts, &mut pairs)?;
                if found.is_some() || self.outer {
                    pairs.push(&row, found, &[], count, false);
                }
                self.ns.clear();
                self.ns.extend_from_slice(&time_key(ts));
                self.ns.extend_from_slice(&row);
                self.backend.delete(self.probes, kg, &key, &self.ns)?;
            }
            self.prune(kg, &key, now)?;
        }
        self.emit(&mut pairs, out)
    }

    /// Deletes the versions of `key` older than its newest one at or before `wm` (and
    /// that one too if it is a deletion): every left row of the key up to `wm` has
    /// joined, and versions at or before the watermark are not accepted any more.
    fn prune(&mut self, kg: KeyGroup, key: &[u8], wm: i64) -> Result<()> {
        let mut upto: Vec<(Vec<u8>, bool)> = Vec::new();
        self.backend
            .scan(self.versions, kg, key, b"", &mut |ns, value| {
                let t = split_namespace(ns).map_or(i64::MIN, |(t, _)| t);
                if t > wm {
                    return false;
                }
                upto.push((ns.to_vec(), version(value).is_some_and(|(d, _)| d)));
                true
            })?;
        let keep_last = upto.last().is_some_and(|(_, deleted)| !deleted);
        let n = upto.len() - usize::from(keep_last);
        for (ns, _) in &upto[..n] {
            self.backend.delete(self.versions, kg, key, ns)?;
        }
        Ok(())
    }
}

fn time_value(times: &sabot_core::arrow::array::Int64Array, row: usize, name: &str) -> Result<i64> {
    if times.is_null(row) {
        return Err(OperatorError::BadRecord {
            reason: "null event time".into(),
            position: format!("row {row} of a batch in `{name}`"),
        });
    }
    Ok(times.value(row))
}

impl Operator for LookupJoinOp {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.on_left(batch, out)
    }

    fn on_batch_from(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        match input {
            0 => self.on_left(batch, out),
            1 => self.on_right(batch),
            _ => Err(OperatorError::InvalidPlan {
                operator: self.name.clone(),
                reason: format!("a join has two inputs, got a batch for input {input}"),
            }),
        }
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Output) -> Result<()> {
        if wm > self.watermark {
            self.watermark = wm;
            if self.event_time() {
                self.fire(wm, out)?;
            }
        }
        out.watermark(wm);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = Timestamp::MAX;
        if self.event_time() {
            self.fire(Timestamp::MAX, out)?;
        }
        Ok(())
    }

    crate::snapshot::backend_snapshots!();
}
