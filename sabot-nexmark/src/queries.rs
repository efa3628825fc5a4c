//! The Nexmark queries, written with Sabot's own `Stream` API: the code users read as
//! examples. Each builds its job on a [`StreamEnv`] and returns the result stream (the
//! caller picks the sink); columns are named as in the Nexmark SQL.

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use sabot_core::arrow::compute::kernels::{cmp, numeric};
use sabot_core::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use sabot_core::{RecordBatch, SchemaRef, Timestamp};
use sabot_operators::{
    KeyedContext, KeyedProcessFunction, ProcessState, Result as OpResult, RowWriter,
};
use sabot_state::{ListState, StateDescriptor, ValueState};
use sabot_time::TimeDomain;

use super::{EventKind, NexmarkConfig, NexmarkSource};
use sabot::{
    Aggregate, GlobalWindow, SessionWindow, SlidingWindow, Stream, StreamEnv, Trigger,
    TumblingWindow,
};

/// How far behind the largest event time seen the watermark trails (the Nexmark SQL's
/// `WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND`).
pub const OUT_OF_ORDERNESS: Duration = Duration::from_secs(4);

/// The queries Sabot runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Query {
    /// Pass-through of bids.
    Q0,
    /// Bids with the price in euros.
    Q1,
    /// Bids on auctions whose id is a multiple of 123.
    Q2,
    /// Sellers in OR, ID or CA of auctions in category 10.
    Q3,
    /// Average closing price per category.
    Q4,
    /// Hot items: the auctions with the most bids per sliding window.
    Q5,
    /// The highest bids per tumbling window.
    Q7,
    /// Persons who opened an auction in the window they registered in.
    Q8,
    /// Bidder sessions.
    Q11,
    /// Bids per bidder in processing-time windows.
    Q12,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 10] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q4,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
        Query::Q12,
    ];

    /// The query's name, `q0` ... `q12`.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q4 => "q4",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
            Query::Q12 => "q12",
        }
    }

    /// The query named `name` (`q5`, `Q5` or `5`).
    pub fn parse(name: &str) -> Option<Query> {
        let n = name.trim().trim_start_matches(['q', 'Q']);
        Query::ALL.into_iter().find(|q| &q.name()[1..] == n)
    }

    /// Whether the results depend on processing time (so only totals can be checked).
    pub fn uses_processing_time(self) -> bool {
        self == Query::Q12
    }

    /// Builds the query's job on `env` over the events of `config`; returns its result.
    pub fn build(self, env: &StreamEnv, config: &NexmarkConfig) -> Stream {
        let source = |kind| {
            env.source(NexmarkSource::new(config.clone(), kind))
                .with_watermarks("date_time", OUT_OF_ORDERNESS)
        };
        match self {
            Query::Q0 => {
                source(EventKind::Bid).select(&["auction", "bidder", "price", "date_time", "extra"])
            }
            Query::Q1 => q1(source(EventKind::Bid)),
            Query::Q2 => source(EventKind::Bid)
                .filter(|b| {
                    let auction = b.column_by_name("auction").ok_or("no auction column")?;
                    let rem = numeric::rem(auction, &Int64Array::new_scalar(123))?;
                    Ok(cmp::eq(&rem, &Int64Array::new_scalar(0))?)
                })
                .select(&["auction", "price"]),
            Query::Q3 => q3(source(EventKind::Auction), source(EventKind::Person)),
            Query::Q4 => q4(source(EventKind::Auction), source(EventKind::Bid), config),
            Query::Q5 => q5(source(EventKind::Bid)),
            Query::Q7 => q7(source(EventKind::Bid)),
            Query::Q8 => q8(source(EventKind::Person), source(EventKind::Auction)),
            Query::Q11 => source(EventKind::Bid)
                .key_by(&["bidder"])
                .window(SessionWindow::with_gap(Duration::from_secs(10)))
                .aggregate([Aggregate::count()])
                .select_as(&[
                    ("bidder", "bidder"),
                    ("count", "bid_count"),
                    ("window_start", "starttime"),
                    ("window_end", "endtime"),
                ]),
            Query::Q12 => q12(env.source(NexmarkSource::new(config.clone(), EventKind::Bid))),
        }
    }
}

/// q1: `SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid`.
fn q1(bids: Stream) -> Stream {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("date_time", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ]));
    bids.select(&["auction", "bidder", "price", "date_time", "extra"])
        .map_to(schema.clone(), move |b| {
            let price = b.column(2).as_primitive::<Int64Type>();
            let euros: Float64Array = price.unary(|p| p as f64 * 0.908);
            let mut cols = b.columns().to_vec();
            cols[2] = Arc::new(euros);
            Ok(RecordBatch::try_new(schema.clone(), cols)?)
        })
}

/// The rows of `b` where `column` (Int64) satisfies `keep`.
fn int_filter(
    b: &RecordBatch,
    column: &str,
    keep: impl Fn(i64) -> bool,
) -> Result<BooleanArray, sabot::operators::BoxError> {
    let c = b
        .column_by_name(column)
        .ok_or_else(|| format!("no column `{column}`"))?;
    Ok(c.as_primitive::<Int64Type>()
        .iter()
        .map(|v| v.map(&keep))
        .collect())
}

/// q3: `SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P ON A.seller =
/// P.id WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')`: an unbounded join.
fn q3(auctions: Stream, persons: Stream) -> Stream {
    let auctions = auctions
        .filter(|b| int_filter(b, "category", |c| c == 10))
        .select(&["id", "seller"])
        .key_by(&["seller"]);
    let persons = persons
        .filter(|b| {
            let s = b
                .column_by_name("state")
                .ok_or("no state column")?
                .as_string::<i32>();
            Ok(s.iter()
                .map(|v| v.map(|v| matches!(v, "OR" | "ID" | "CA")))
                .collect())
        })
        .select(&["id", "name", "city", "state"])
        .key_by(&["id"]);
    // A person's id is unique: auctions of a seller already held are not stored.
    auctions
        .join(persons)
        .right_key_unique()
        .regular(None)
        .select_as(&[
            ("name", "name"),
            ("city", "city"),
            ("state", "state"),
            ("id", "id"),
        ])
}

/// q4: the average closing price per category. An auction closes at its `expires`; its
/// closing price is its highest bid between its opening and its expiry. Each closing
/// updates its category's average (emitted as `category, final`).
fn q4(auctions: Stream, bids: Stream, config: &NexmarkConfig) -> Stream {
    // An auction lives at most twice the time 100 more auctions take to appear.
    let ahead = 100 * 50 / 3;
    let longest = config.timestamp(ahead) - config.timestamp(0);
    let auctions = auctions
        .select(&["id", "category", "date_time", "expires"])
        .key_by(&["id"]);
    let bids = bids
        .select_as(&[
            ("auction", "auction"),
            ("price", "price"),
            ("date_time", "bid_time"),
        ])
        .key_by(&["auction"]);
    let output: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("category", DataType::Int64, false),
        Field::new("final", DataType::Int64, false),
    ]));
    // An auction's id is unique: bids on an auction already held are not stored.
    auctions
        .join(bids)
        .left_key_unique()
        .interval(0, 2 * longest + 1)
        .filter(|b| {
            let t = b.column_by_name("bid_time").ok_or("no bid_time")?;
            let e = b.column_by_name("expires").ok_or("no expires")?;
            Ok(cmp::lt_eq(t, e)?)
        })
        .key_by(&["id"])
        .process_fn("closing_price", output, || ClosingPrice {
            state: None,
            columns: IntColumns::new(&["price", "category", "expires"]),
        })
        .key_by(&["category"])
        .window(GlobalWindow::with_trigger(Trigger::Count(1)))
        .aggregate([Aggregate::avg("final").alias("final")])
}

/// Per auction: the highest price so far, its category and expiry; emits
/// `(category, highest)` when the watermark passes the expiry.
struct ClosingPrice {
    state: Option<(ValueState<(i64, i64, i64)>,)>,
    columns: IntColumns,
}

impl KeyedProcessFunction for ClosingPrice {
    fn open(&mut self, state: &mut ProcessState) -> OpResult<()> {
        self.state = Some((state.value_state(StateDescriptor::new("closing"))?,));
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        _out: &mut RowWriter,
    ) -> OpResult<()> {
        let mut v = |i| self.columns.value(batch, i, row);
        let (price, category, expires) = (v(0)?, v(1)?, v(2)?);
        let Some((st,)) = &self.state else {
            return Ok(());
        };
        let best = match st.get(ctx.state())? {
            Some((p, _, _)) if p >= price => return Ok(()),
            Some(_) => (price, category, expires),
            None => {
                ctx.register_event_time_timer(Timestamp::from_millis(expires));
                (price, category, expires)
            }
        };
        Ok(st.update(ctx.state(), &best)?)
    }

    fn on_timer(
        &mut self,
        _at: Timestamp,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> OpResult<()> {
        let Some((st,)) = &self.state else {
            return Ok(());
        };
        if let Some((price, category, _)) = st.get(ctx.state())? {
            out.append_i64(0, category)?;
            out.append_i64(1, price)?;
            st.clear(ctx.state())?;
        }
        Ok(())
    }
}

/// Int64 columns a process function reads by name, found once per schema: a row's
/// value is then an index into the batch, not a search of its column names.
struct IntColumns {
    names: Vec<String>,
    /// The schema of the batches last seen (batches of one stream share it), and where
    /// each name is in it.
    found: Option<(SchemaRef, Vec<usize>)>,
}

impl IntColumns {
    fn new(names: &[&str]) -> Self {
        IntColumns {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            found: None,
        }
    }

    /// The value of the `i`-th named column in `row` of `batch`.
    #[inline]
    fn value(&mut self, batch: &RecordBatch, i: usize, row: usize) -> OpResult<i64> {
        let known = self
            .found
            .as_ref()
            .is_some_and(|(s, _)| Arc::ptr_eq(s, batch.schema_ref()));
        if !known {
            self.found = Some((batch.schema(), self.find(batch)?));
        }
        let at = self.found.as_ref().map_or(0, |(_, at)| at[i]);
        Ok(batch.column(at).as_primitive::<Int64Type>().value(row))
    }

    /// Where each name is in `batch`, checking that it is an Int64 column.
    fn find(&self, batch: &RecordBatch) -> OpResult<Vec<usize>> {
        let schema = batch.schema_ref();
        self.names
            .iter()
            .map(|name| match schema.index_of(name) {
                Ok(at) if schema.field(at).data_type() == &DataType::Int64 => Ok(at),
                Ok(at) => Err(plan_error(format!(
                    "column `{name}` is {}, not Int64",
                    schema.field(at).data_type()
                ))),
                Err(_) => Err(plan_error(format!("no column `{name}`"))),
            })
            .collect()
    }
}

fn plan_error(reason: String) -> sabot_operators::OperatorError {
    sabot_operators::OperatorError::InvalidPlan {
        operator: "nexmark".into(),
        reason,
    }
}

/// q5 (hot items): bids per auction in 10 s windows every 2 s; per window, the auctions
/// with the most bids (ties all emitted): `auction, num, window_start, window_end`.
fn q5(bids: Stream) -> Stream {
    let output: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("num", DataType::Int64, false),
        Field::new("window_start", DataType::Int64, false),
        Field::new("window_end", DataType::Int64, false),
    ]));
    bids.select(&["auction", "date_time"])
        .key_by(&["auction"])
        .window(SlidingWindow::of(
            Duration::from_secs(10),
            Duration::from_secs(2),
        ))
        .aggregate([Aggregate::count().alias("num")])
        .key_by(&["window_start"])
        .process_fn("top_per_window", output, || {
            TopPerWindow::new(&["auction", "num", "window_start", "window_end"])
        })
}

/// q7 (highest bid): per 10 s tumbling window, the bids with the highest price:
/// `auction, price, bidder, date_time, extra`.
fn q7(bids: Stream) -> Stream {
    let output: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("date_time", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ]));
    bids.select(&["auction", "price", "bidder", "date_time", "extra"])
        .with_column("window_start", DataType::Int64, |b| {
            let t = b.column_by_name("date_time").ok_or("no date_time")?;
            let t = t.as_primitive::<Int64Type>();
            Ok(Arc::new(t.unary::<_, Int64Type>(|v| v - v.rem_euclid(10_000))) as ArrayRef)
        })
        .key_by(&["window_start"])
        .process_fn("highest_bid", output, HighestBid::default)
}

/// A window's best value so far, its end, and the ids that have it.
type WindowTop = (i64, i64, Vec<i64>);

/// Per window (the key: its start): the rows with the largest value so far; emitted when
/// the watermark passes the window's end. q5 keeps `(auction, num)` rows by `num`.
struct TopPerWindow {
    columns: IntColumns,
    best: Option<(ValueState<WindowTop>,)>,
}

impl TopPerWindow {
    fn new(columns: &[&str]) -> Self {
        TopPerWindow {
            columns: IntColumns::new(columns),
            best: None,
        }
    }
}

impl KeyedProcessFunction for TopPerWindow {
    fn open(&mut self, state: &mut ProcessState) -> OpResult<()> {
        self.best = Some((state.value_state(StateDescriptor::new("top"))?,));
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        _out: &mut RowWriter,
    ) -> OpResult<()> {
        let (id, num, end) = (
            self.columns.value(batch, 0, row)?,
            self.columns.value(batch, 1, row)?,
            self.columns.value(batch, 3, row)?,
        );
        let Some((st,)) = &self.best else {
            return Ok(());
        };
        let next = match st.get(ctx.state())? {
            None => {
                ctx.register_event_time_timer(Timestamp::from_millis(end - 1));
                (num, end, vec![id])
            }
            Some((best, _, _)) if num > best => (num, end, vec![id]),
            Some((best, e, mut ids)) if num == best => {
                ids.push(id);
                (best, e, ids)
            }
            Some(_) => return Ok(()),
        };
        Ok(st.update(ctx.state(), &next)?)
    }

    fn on_timer(
        &mut self,
        _at: Timestamp,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> OpResult<()> {
        let Some((st,)) = &self.best else {
            return Ok(());
        };
        let start = ctx.key_i64().unwrap_or(0);
        if let Some((num, end, ids)) = st.get(ctx.state())? {
            for id in ids {
                out.append_i64(0, id)?;
                out.append_i64(1, num)?;
                out.append_i64(2, start)?;
                out.append_i64(3, end)?;
            }
            st.clear(ctx.state())?;
        }
        Ok(())
    }
}

/// A bid as q7 keeps it: auction, price, bidder, date_time, extra.
type Bid = (i64, i64, i64, i64, String);

/// q7's per-window state: the highest price, and the bids at that price in a list (a
/// tie appends without reading the list; a higher price clears it).
struct HighestBid {
    state: Option<(ValueState<i64>, ListState<Bid>)>,
    /// price, auction, bidder, date_time.
    columns: IntColumns,
}

impl Default for HighestBid {
    fn default() -> Self {
        HighestBid {
            state: None,
            columns: IntColumns::new(&["price", "auction", "bidder", "date_time"]),
        }
    }
}

impl KeyedProcessFunction for HighestBid {
    fn open(&mut self, state: &mut ProcessState) -> OpResult<()> {
        self.state = Some((
            state.value_state(StateDescriptor::new("highest"))?,
            state.list_state(StateDescriptor::new("highest_bids"))?,
        ));
        Ok(())
    }

    fn process_element(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        ctx: &mut KeyedContext<'_>,
        _out: &mut RowWriter,
    ) -> OpResult<()> {
        let price = self.columns.value(batch, 0, row)?;
        let Some((highest, bids)) = &self.state else {
            return Ok(());
        };
        let current = highest.get(ctx.state())?;
        if current.is_some_and(|p| p > price) {
            return Ok(());
        }
        let extra = batch
            .column_by_name("extra")
            .map(|c| c.as_string::<i32>().value(row).to_owned())
            .unwrap_or_default();
        let bid = (
            self.columns.value(batch, 1, row)?,
            price,
            self.columns.value(batch, 2, row)?,
            self.columns.value(batch, 3, row)?,
            extra,
        );
        match current {
            None => {
                let start = ctx.key_i64().unwrap_or(0);
                ctx.register_event_time_timer(Timestamp::from_millis(start + 10_000 - 1));
            }
            Some(p) if p == price => return Ok(bids.add(ctx.state(), &bid)?),
            Some(_) => bids.clear(ctx.state())?,
        }
        highest.update(ctx.state(), &price)?;
        Ok(bids.add(ctx.state(), &bid)?)
    }

    fn on_timer(
        &mut self,
        _at: Timestamp,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_>,
        out: &mut RowWriter,
    ) -> OpResult<()> {
        let Some((highest, bids)) = &self.state else {
            return Ok(());
        };
        for (auction, price, bidder, t, extra) in bids.get(ctx.state())? {
            out.append_i64(0, auction)?;
            out.append_i64(1, price)?;
            out.append_i64(2, bidder)?;
            out.append_i64(3, t)?;
            out.append_str(4, &extra)?;
        }
        highest.clear(ctx.state())?;
        bids.clear(ctx.state())?;
        Ok(())
    }
}

/// q8 (new users): persons who opened an auction in the same 10 s tumbling window they
/// registered in: `id, name, starttime`, once per person and window.
fn q8(persons: Stream, auctions: Stream) -> Stream {
    let persons = persons.select(&["id", "name", "date_time"]).key_by(&["id"]);
    let auctions = auctions
        .select_as(&[("seller", "seller"), ("date_time", "opened")])
        .key_by(&["seller"]);
    persons
        .join(auctions)
        // A person's id is unique: auctions of a person already held are not stored.
        .left_key_unique()
        .window(TumblingWindow::of(Duration::from_secs(10)))
        .select_as(&[
            ("id", "id"),
            ("name", "name"),
            ("date_time", "date_time"),
            ("window_start", "starttime"),
        ])
        // One row per person and window, however many auctions they opened in it.
        .key_by(&["id", "name", "starttime"])
        .window(TumblingWindow::of(Duration::from_secs(10)))
        .aggregate([Aggregate::count()])
        .select(&["id", "name", "starttime"])
}

/// q12: bids per bidder in 10 s tumbling windows of processing time (ingestion time).
fn q12(bids: Stream) -> Stream {
    bids.select(&["bidder"])
        .with_column("p_time", DataType::Int64, |b| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Ok(Arc::new(Int64Array::from_value(now, b.num_rows())) as ArrayRef)
        })
        .with_watermarks("p_time", Duration::ZERO)
        .key_by(&["bidder"])
        .window(TumblingWindow::of(Duration::from_secs(10)))
        .aggregate([Aggregate::count()])
        .select_as(&[
            ("bidder", "bidder"),
            ("count", "bid_count"),
            ("window_start", "starttime"),
            ("window_end", "endtime"),
        ])
}
