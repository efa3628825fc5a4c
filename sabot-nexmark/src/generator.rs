//! The Nexmark event generator: Beam's arithmetic, reproducible event by event.
//!
//! Every draw for event `n` comes from [`SplitMix64`] keyed by `(seed, n)`, so any event
//! can be generated on its own, in any order, on any thread: source subtasks generate
//! disjoint chunks of event numbers and together give the same events at every
//! parallelism. Events are built straight into Arrow columns.

use std::sync::{Arc, OnceLock};

use sabot_core::arrow::array::{ArrayRef, DictionaryArray, Int32Array, Int64Array, StringArray};
use sabot_core::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use sabot_core::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use sabot_core::arrow::error::ArrowError;
use sabot_core::random::SplitMix64;
use sabot_core::{CoreError, RecordBatch, SchemaRef};

/// Event time of event 0: 2015-07-15T00:00:00Z (the Nexmark paper's era; fixed, so a seed
/// always gives the same events).
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;

/// Of every 50 events: 1 person, 3 auctions, 46 bids.
const PROPORTION_DENOMINATOR: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ACTIVE_PEOPLE: u64 = 1000;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_BIDDER_RATIO: u64 = 4;
const PERSON_AVG_BYTES: usize = 200;
const AUCTION_AVG_BYTES: usize = 500;
const BID_AVG_BYTES: usize = 100;
/// Channels that are not hot: `channel-0` .. `channel-9999`.
const CHANNELS: u64 = 10_000;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];

/// What kind an event is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A new person (seller or bidder).
    Person,
    /// A new auction.
    Auction,
    /// A bid on an auction.
    Bid,
}

impl EventKind {
    /// The kind of event number `n`.
    #[inline]
    pub fn of(n: u64) -> EventKind {
        match n % PROPORTION_DENOMINATOR {
            0 => EventKind::Person,
            1..=3 => EventKind::Auction,
            _ => EventKind::Bid,
        }
    }

    /// The schema of this kind's batches (columns named as in the Nexmark SQL; times in
    /// milliseconds since the epoch).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| {
            let i = |n: &str| Field::new(n, DataType::Int64, false);
            let s = |n: &str| Field::new(n, DataType::Utf8, false);
            // Bids' channel and url: one of 10,004 values each, dictionary-encoded.
            let d = |n: &str| {
                Field::new(
                    n,
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    false,
                )
            };
            [
                Arc::new(Schema::new(vec![
                    i("id"),
                    s("name"),
                    s("email_address"),
                    s("credit_card"),
                    s("city"),
                    s("state"),
                    i("date_time"),
                    s("extra"),
                ])),
                Arc::new(Schema::new(vec![
                    i("id"),
                    s("item_name"),
                    s("description"),
                    i("initial_bid"),
                    i("reserve"),
                    i("date_time"),
                    i("expires"),
                    i("seller"),
                    i("category"),
                    s("extra"),
                ])),
                Arc::new(Schema::new(vec![
                    i("auction"),
                    i("bidder"),
                    i("price"),
                    d("channel"),
                    d("url"),
                    i("date_time"),
                    s("extra"),
                ])),
            ]
        });
        all[self as usize].clone()
    }
}

/// Settings of the generator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NexmarkConfig {
    /// Events in all (persons, auctions and bids).
    pub events: u64,
    /// The same seed gives the same events.
    pub seed: u64,
    /// Events per second of event time.
    pub rate: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 10_000_000,
            seed: 0,
            rate: 10_000,
        }
    }
}

impl NexmarkConfig {
    /// `events` events from seed `seed` at `rate` events/s of event time.
    pub fn new(events: u64, seed: u64, rate: u64) -> Self {
        NexmarkConfig { events, seed, rate }
    }

    /// Checks the settings, naming the one out of range.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.rate == 0 || self.rate > 1_000_000_000 {
            return Err(CoreError::InvalidConfig {
                name: "rate".into(),
                reason: format!(
                    "events per second of event time must be in 1..=1e9, got {}",
                    self.rate
                ),
            });
        }
        if self.events > 1 << 50 {
            return Err(CoreError::InvalidConfig {
                name: "events".into(),
                reason: format!("at most 2^50 events, got {}", self.events),
            });
        }
        Ok(())
    }

    /// Event time of event `n`, in whole milliseconds (integers only).
    #[inline]
    pub fn timestamp(&self, n: u64) -> i64 {
        // n <= 2^50 (validated), so n * 1000 fits in 64 bits.
        BASE_TIME_MS + (n.saturating_mul(1000) / self.rate.max(1)) as i64
    }
}

/// Persons created before event `n` (counting event `n`'s own person).
#[inline]
fn last_person(n: u64) -> u64 {
    n / PROPORTION_DENOMINATOR
}

/// The auction count so far at event `n` (Beam's `lastBase0AuctionId`).
#[inline]
fn last_auction(n: u64) -> u64 {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut off = n % PROPORTION_DENOMINATOR;
    if off < 1 {
        epoch = epoch.wrapping_sub(1);
        off = 2;
    } else if off >= 4 {
        off = 2;
    } else {
        off -= 1;
    }
    epoch.wrapping_mul(3).wrapping_add(off)
}

#[inline]
fn random_person(n: u64, r: &mut SplitMix64) -> u64 {
    let num = last_person(n) + 1;
    let active = num.min(ACTIVE_PEOPLE);
    num - active + r.below(active + 10)
}

#[inline]
fn random_auction(n: u64, r: &mut SplitMix64) -> u64 {
    let max = last_auction(n);
    let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
    min + r.below(max - min + 1 + 10)
}

/// Bits of `u` each price table covers: `u` has 20 (1/1,048,576 steps of the exponent);
/// the two tables take 16 KiB, so they stay in the L1 cache.
const PRICE_BITS: u32 = 10;

/// `10^(6 i / 2^10) * 100` and `10^(6 i / 2^20)` for `i < 2^10`: a price is one product.
fn price_tables() -> &'static (Vec<f64>, Vec<f64>) {
    static T: OnceLock<(Vec<f64>, Vec<f64>)> = OnceLock::new();
    T.get_or_init(|| {
        let n = 1usize << PRICE_BITS;
        let hi = (0..n)
            .map(|i| 10f64.powf(6.0 * i as f64 / n as f64) * 100.0)
            .collect();
        let lo = (0..n)
            .map(|i| 10f64.powf(6.0 * i as f64 / (n * n) as f64))
            .collect();
        (hi, lo)
    })
}

/// A log-uniform price in cents, 100 to 100,000,000: Beam's `round(10^(6u) * 100)`, with
/// `u` in steps of 2^-20 (two table lookups instead of `pow`).
#[inline]
fn price(r: &mut SplitMix64) -> i64 {
    let (hi, lo) = price_tables();
    let u = (r.next_u64() >> (64 - 2 * PRICE_BITS)) as usize;
    let mask = (1 << PRICE_BITS) - 1;
    // Rounds half up (the product is at least 100: no negative or tiny values).
    (hi[u >> PRICE_BITS] * lo[u & mask] + 0.5) as i64
}

/// The shared padding text: 32 KiB of seeded lower-case letters, sliced for `extra`
/// (small enough to stay in the CPU's caches: a padding is a copy, not a cache miss).
fn padding() -> &'static [u8] {
    static PAD: OnceLock<Vec<u8>> = OnceLock::new();
    PAD.get_or_init(|| {
        let mut r = SplitMix64::new(0x5AB0_7E7A, 0);
        (0..32 << 10).map(|_| b'a' + r.below(26) as u8).collect()
    })
}

/// Every channel's name and URL, as the dictionaries of the bids' `channel` and `url`
/// columns: the 4 hot channels first, then `channel-0` .. `channel-9999` (the same for
/// every seed), and each value's length.
struct Channels {
    names: ArrayRef,
    urls: ArrayRef,
    /// Per dictionary index: name length + url length.
    bytes: Vec<usize>,
}

fn channels() -> &'static Channels {
    static CH: OnceLock<Channels> = OnceLock::new();
    CH.get_or_init(|| {
        let mut names: Vec<String> = HOT_CHANNELS.iter().map(|s| (*s).to_owned()).collect();
        let mut urls: Vec<String> = HOT_URLS.iter().map(|s| (*s).to_owned()).collect();
        for c in 0..CHANNELS {
            let mut r = SplitMix64::new(0xC4A7_7E15, c);
            let mut url = String::from("https://www.nexmark.com/");
            for part in 0..3 {
                if part > 0 {
                    url.push('/');
                }
                push_str(&mut url, &mut r, 5);
            }
            url.push_str("/item.htm?query=1&channel_id=");
            url.push_str(&(c as u32).reverse_bits().to_string());
            names.push(format!("channel-{c}"));
            urls.push(url);
        }
        let bytes = names
            .iter()
            .zip(&urls)
            .map(|(n, u)| n.len() + u.len())
            .collect();
        Channels {
            names: Arc::new(StringArray::from(names)),
            urls: Arc::new(StringArray::from(urls)),
            bytes,
        }
    })
}

/// Beam's `nextString(max)`: 3 + U[0, max - 3) characters, each a space with probability
/// 1/13 else a-z, trimmed.
fn push_str(out: &mut String, r: &mut SplitMix64, max: u64) {
    let len = 3 + r.below(max - 3);
    let start = out.len();
    for _ in 0..len {
        let c = r.below(26 * 13);
        out.push(if c < 26 {
            ' '
        } else {
            (b'a' + (c % 26) as u8) as char
        });
    }
    let trimmed = out[start..].trim().to_owned();
    out.truncate(start);
    out.push_str(&trimmed);
}

/// Appends `extra` padding for an event whose other fields take `cur` bytes, towards
/// `avg`: `a = avg - cur`, `d = round(a / 5)`, length `a - d + U[0, 2d)`, a slice of the
/// shared padding text.
#[inline]
fn push_extra(values: &mut Vec<u8>, r: &mut SplitMix64, cur: usize, avg: usize) {
    if cur > avg {
        r.next_u64(); // keep the draw count independent of the branch
        return;
    }
    let a = (avg - cur) as u64;
    let d = (a + 2) / 5;
    let len = (a - d + r.below(2 * d)) as usize;
    let pad = padding();
    let at = r.below((pad.len() - len.max(SHORT)) as u64) as usize;
    if len <= SHORT {
        // A fixed-size copy (inlined, no call), cut to length: most paddings are short.
        let start = values.len();
        values.extend_from_slice(&pad[at..at + SHORT]);
        values.truncate(start + len);
    } else {
        values.extend_from_slice(&pad[at..at + len]);
    }
}

/// Paddings up to this long are copied in one fixed-size move.
const SHORT: usize = 32;

/// A `Utf8` column being built: values back to back and their offsets.
struct Strings {
    values: Vec<u8>,
    offsets: Vec<i32>,
}

impl Strings {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Strings {
            values: Vec::with_capacity(bytes),
            offsets,
        }
    }

    #[inline]
    fn push(&mut self, s: &str) {
        self.values.extend_from_slice(s.as_bytes());
        self.end();
    }

    /// Ends the value written into `values` since the last one.
    #[inline]
    fn end(&mut self) {
        self.offsets.push(self.values.len() as i32);
    }

    fn finish(self) -> ArrayRef {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        // Every value is ASCII (written above): valid UTF-8; `new` checks the offsets.
        Arc::new(StringArray::new(
            offsets,
            Buffer::from_vec(self.values),
            None,
        ))
    }
}

/// Generates events of one kind in event-number ranges.
#[derive(Clone, Debug)]
pub struct Generator {
    config: NexmarkConfig,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: NexmarkConfig) -> Self {
        Generator { config }
    }

    /// The settings.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The events of `kind` among event numbers `range` (clipped to the configured
    /// number of events), as one batch.
    pub fn batch(
        &self,
        kind: EventKind,
        range: std::ops::Range<u64>,
    ) -> Result<RecordBatch, ArrowError> {
        let range = range.start.min(self.config.events)..range.end.min(self.config.events);
        let cols = match kind {
            EventKind::Person => self.persons(range),
            EventKind::Auction => self.auctions(range),
            EventKind::Bid => self.bids(range)?,
        };
        RecordBatch::try_new(kind.schema(), cols)
    }

    /// Event numbers of `kind` in `range`, in order.
    fn numbers(range: std::ops::Range<u64>, kind: EventKind) -> impl Iterator<Item = u64> {
        range.filter(move |&n| EventKind::of(n) == kind)
    }

    fn persons(&self, range: std::ops::Range<u64>) -> Vec<ArrayRef> {
        let rows = (range.end - range.start) as usize / 50 + 1;
        let mut id = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut name = Strings::with_capacity(rows, rows * 16);
        let mut email = Strings::with_capacity(rows, rows * 16);
        let mut card = Strings::with_capacity(rows, rows * 19);
        let mut city = Strings::with_capacity(rows, rows * 10);
        let mut state = Strings::with_capacity(rows, rows * 2);
        let mut extra = Strings::with_capacity(rows, rows * PERSON_AVG_BYTES);
        let mut s = String::new();
        for n in Self::numbers(range, EventKind::Person) {
            let mut r = SplitMix64::new(self.config.seed, n);
            id.push(last_person(n) as i64 + FIRST_PERSON_ID);
            ts.push(self.config.timestamp(n));
            s.clear();
            s.push_str(FIRST_NAMES[r.below(FIRST_NAMES.len() as u64) as usize]);
            s.push(' ');
            s.push_str(LAST_NAMES[r.below(LAST_NAMES.len() as u64) as usize]);
            name.push(&s);
            let mut cur = s.len();
            s.clear();
            push_str(&mut s, &mut r, 7);
            s.push('@');
            push_str(&mut s, &mut r, 5);
            s.push_str(".com");
            email.push(&s);
            cur += s.len();
            s.clear();
            for i in 0..4 {
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(&format!("{:04}", r.below(10_000)));
            }
            card.push(&s);
            cur += s.len();
            let c = CITIES[r.below(CITIES.len() as u64) as usize];
            let st = STATES[r.below(STATES.len() as u64) as usize];
            city.push(c);
            state.push(st);
            cur += c.len() + st.len() + 8 + 8;
            push_extra(&mut extra.values, &mut r, cur, PERSON_AVG_BYTES);
            extra.end();
        }
        vec![
            Arc::new(Int64Array::from(id)),
            name.finish(),
            email.finish(),
            card.finish(),
            city.finish(),
            state.finish(),
            Arc::new(Int64Array::from(ts)),
            extra.finish(),
        ]
    }

    fn auctions(&self, range: std::ops::Range<u64>) -> Vec<ArrayRef> {
        let rows = (range.end - range.start) as usize * 3 / 50 + 3;
        let mut id = Vec::with_capacity(rows);
        let mut initial = Vec::with_capacity(rows);
        let mut reserve = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut expires = Vec::with_capacity(rows);
        let mut seller = Vec::with_capacity(rows);
        let mut category = Vec::with_capacity(rows);
        let mut item = Strings::with_capacity(rows, rows * 12);
        let mut desc = Strings::with_capacity(rows, rows * 52);
        let mut extra = Strings::with_capacity(rows, rows * AUCTION_AVG_BYTES);
        let mut s = String::new();
        // Time to generate about 100 more auctions: an auction's lifetime scale.
        let ahead = IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / 3;
        for n in Self::numbers(range, EventKind::Auction) {
            let mut r = SplitMix64::new(self.config.seed, n);
            let t = self.config.timestamp(n);
            id.push(last_auction(n) as i64 + FIRST_AUCTION_ID);
            let sel = if r.below(HOT_SELLER_RATIO) > 0 {
                (last_person(n) / 100) * 100
            } else {
                random_person(n, &mut r)
            };
            seller.push(sel as i64 + FIRST_PERSON_ID);
            category.push(FIRST_CATEGORY_ID + r.below(NUM_CATEGORIES) as i64);
            let init = price(&mut r);
            initial.push(init);
            reserve.push(init + price(&mut r));
            s.clear();
            push_str(&mut s, &mut r, 20);
            item.push(&s);
            let mut cur = s.len();
            s.clear();
            push_str(&mut s, &mut r, 100);
            desc.push(&s);
            cur += s.len() + 8 * 7;
            let h = (self.config.timestamp(n + ahead) - t).max(0) as u64;
            expires.push(t + 1 + r.below((2 * h).max(1)) as i64);
            ts.push(t);
            push_extra(&mut extra.values, &mut r, cur, AUCTION_AVG_BYTES);
            extra.end();
        }
        vec![
            Arc::new(Int64Array::from(id)),
            item.finish(),
            desc.finish(),
            Arc::new(Int64Array::from(initial)),
            Arc::new(Int64Array::from(reserve)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Int64Array::from(expires)),
            Arc::new(Int64Array::from(seller)),
            Arc::new(Int64Array::from(category)),
            extra.finish(),
        ]
    }

    fn bids(&self, range: std::ops::Range<u64>) -> Result<Vec<ArrayRef>, ArrowError> {
        let rows = (range.end - range.start) as usize * 46 / 50 + 46;
        let mut auction = Vec::with_capacity(rows);
        let mut bidder = Vec::with_capacity(rows);
        let mut prices = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut channel: Vec<i32> = Vec::with_capacity(rows);
        let mut extra = Strings::with_capacity(rows, rows * 24);
        let ch = channels();
        for n in Self::numbers(range, EventKind::Bid) {
            let mut r = SplitMix64::new(self.config.seed, n);
            let a = if r.below(HOT_AUCTION_RATIO) > 0 {
                (last_auction(n) / 100) * 100
            } else {
                random_auction(n, &mut r)
            };
            auction.push(a as i64 + FIRST_AUCTION_ID);
            let b = if r.below(HOT_BIDDER_RATIO) > 0 {
                (last_person(n) / 100) * 100 + 1
            } else {
                random_person(n, &mut r)
            };
            bidder.push(b as i64 + FIRST_PERSON_ID);
            prices.push(price(&mut r));
            // Half the bids on one of the 4 hot channels, else on one of 10,000 others.
            let c = if r.below(2) == 0 {
                r.below(HOT_CHANNELS.len() as u64) as usize
            } else {
                HOT_CHANNELS.len() + r.below(CHANNELS) as usize
            };
            channel.push(c as i32);
            ts.push(self.config.timestamp(n));
            push_extra(&mut extra.values, &mut r, ch.bytes[c] + 32, BID_AVG_BYTES);
            extra.end();
        }
        let keys = Int32Array::from(channel);
        let dict = |values: &ArrayRef| -> Result<ArrayRef, ArrowError> {
            Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                keys.clone(),
                values.clone(),
            )?))
        };
        Ok(vec![
            Arc::new(Int64Array::from(auction)),
            Arc::new(Int64Array::from(bidder)),
            Arc::new(Int64Array::from(prices)),
            dict(&ch.names)?,
            dict(&ch.urls)?,
            Arc::new(Int64Array::from(ts)),
            extra.finish(),
        ])
    }
}
