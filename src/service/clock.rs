//! `meta.lastUpdated` values: strictly increasing within this process and per resource, even
//! when the wall clock steps back or two writes fall in the same microsecond.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::fhir::instant::{Micros, now_micros};

static LAST_ISSUED: AtomicI64 = AtomicI64::new(0);

/// A timestamp later than every one issued before by this process and later than `after`
/// (the resource's previous version, which another server node may have written).
pub fn next_timestamp(after: Option<Micros>) -> Micros {
    let floor = after.map_or(i64::MIN, |t| t + 1);
    let mut previous = LAST_ISSUED.load(Ordering::Relaxed);
    loop {
        let candidate = now_micros().max(previous + 1).max(floor);
        match LAST_ISSUED.compare_exchange_weak(
            previous,
            candidate,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return candidate,
            Err(actual) => previous = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase() {
        let mut last = next_timestamp(None);
        for _ in 0..10_000 {
            let next = next_timestamp(None);
            assert!(next > last);
            last = next;
        }
        let future = last + 60_000_000;
        assert!(next_timestamp(Some(future)) > future);
    }
}
