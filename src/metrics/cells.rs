//! The lock-free cells a metrics shard is made of: a counter table keyed
//! by small integers, and a histogram of relaxed atomics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Room for the longest bucket list, plus the overflow bucket.
const MAX_BUCKETS: usize = 16;

/// Insert-only counters keyed by a small nonzero integer, without a lock:
/// a key claims a slot by compare-and-swap, and then its count is a plain
/// atomic add. Keys past the table's room are summed in `overflow` (behind
/// a lock: a route answering with more than 64 (outcome, status) pairs).
pub(super) struct CounterTable {
    slots: [Slot; 64],
    overflow: Mutex<BTreeMap<u32, u64>>,
}

#[derive(Default)]
struct Slot {
    /// 0 = free; otherwise the key + 1.
    key: AtomicU32,
    count: AtomicU64,
}

impl Default for CounterTable {
    fn default() -> CounterTable {
        CounterTable {
            slots: std::array::from_fn(|_| Slot::default()),
            overflow: Mutex::new(BTreeMap::new()),
        }
    }
}

impl CounterTable {
    pub(super) fn add(&self, key: u32) {
        let stored = key.wrapping_add(1);
        let len = self.slots.len();
        let start = (key.wrapping_mul(0x9e37_79b9) >> 26) as usize % len;
        for step in 0..len {
            let slot = &self.slots[(start + step) % len];
            let mut current = slot.key.load(Ordering::Acquire);
            if current == 0 {
                current =
                    match slot
                        .key
                        .compare_exchange(0, stored, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => stored,
                        Err(taken) => taken,
                    };
            }
            if current == stored {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        *self
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub(super) fn for_each(&self, mut each: impl FnMut(u32, u64)) {
        for slot in &self.slots {
            let stored = slot.key.load(Ordering::Acquire);
            let count = slot.count.load(Ordering::Relaxed);
            if stored != 0 && count > 0 {
                each(stored - 1, count);
            }
        }
        for (key, count) in self
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            each(*key, *count);
        }
    }
}

/// A histogram of relaxed atomics (its bucket bounds are given by the caller).
#[derive(Default)]
pub(super) struct Histogram {
    /// Per bucket (not cumulative); the last used slot is the overflow.
    counts: [AtomicU64; MAX_BUCKETS],
    sum_nanos: AtomicU64,
}

/// A histogram's figures summed over shards.
pub(super) struct HistogramSum {
    counts: [u64; MAX_BUCKETS],
    sum_nanos: u64,
}

impl Histogram {
    pub(super) fn observe(&self, bounds: &[f64], elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn sum_of<'a>(histograms: impl Iterator<Item = &'a Histogram>) -> HistogramSum {
        let mut sum = HistogramSum {
            counts: [0; MAX_BUCKETS],
            sum_nanos: 0,
        };
        for histogram in histograms {
            for (total, count) in sum.counts.iter_mut().zip(&histogram.counts) {
                *total += count.load(Ordering::Relaxed);
            }
            sum.sum_nanos = sum
                .sum_nanos
                .wrapping_add(histogram.sum_nanos.load(Ordering::Relaxed));
        }
        sum
    }
}

impl HistogramSum {
    pub(super) fn render(&self, out: &mut String, name: &str, label: &str, bounds: &[f64]) {
        let count: u64 = self.counts.iter().sum();
        if count == 0 {
            return;
        }
        let mut cumulative = 0;
        for (bound, bucket) in bounds.iter().zip(&self.counts) {
            cumulative += bucket;
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {count}");
        let seconds = self.sum_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{label}}} {seconds}");
        let _ = writeln!(out, "{name}_count{{{label}}} {count}");
    }
}
