//! The agent's pace of API Gateway calls: a share of the account's management quota (10
//! requests/s per account and region, burst 40, shared with the customer's own deployments and
//! not raisable), never a burst that would take the customer's room.
//!
//! Every request starts in a slot of its own, `1 / rate` after the one before, on a grid of the
//! interval (so no second of the clock holds more than `rate` of them). Slots come from a
//! schedule shared by every execution and container of the account (kept in the state table), so
//! overlapping executions together still keep the pace: each container reserves a second's worth
//! of slots at a time, and drops those it did not use in time.
//!
//! By hand rather than a rate-limiter crate (governor and the like): those keep their state in
//! one process, and this pace must hold across every container of the account, so its state
//! lives in DynamoDB; what is left here is a queue of reserved times.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::error::Result;

/// Where a [`Pacer`] reserves its slots.
pub trait SlotSource: Send + Sync {
    /// Reserves `count` slots `interval_ms` apart, none before `now_ms` (epoch milliseconds), and
    /// answers the first one's time; the others follow it.
    fn reserve(
        &self,
        count: u32,
        interval_ms: i64,
        now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<i64>> + Send + '_>>;
}

pub struct Pacer {
    interval: Duration,
    /// Slots reserved at once from the shared schedule: a second's worth.
    batch: u32,
    source: Box<dyn SlotSource>,
    /// The reserved slots this pacer has not used yet, epoch milliseconds, in order.
    held: Mutex<VecDeque<i64>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("interval", &self.interval).field("batch", &self.batch).finish()
    }
}

impl Pacer {
    /// A pace of `rate` requests per second kept together with every other pacer of `source`'s
    /// schedule.
    pub fn shared(rate: f64, source: impl SlotSource + 'static) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            batch: rate.ceil().max(1.0) as u32,
            source: Box::new(source),
            held: Mutex::default(),
        }
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) -> Result<()> {
        let interval_ms = self.interval.as_millis() as i64;
        let slot_ms = {
            let mut held = self.held.lock().await;
            let now_ms = epoch_ms();
            // A slot not used within half an interval belongs to the past: using it now could
            // put two requests closer together than the pace.
            while held.front().is_some_and(|slot| slot + interval_ms / 2 < now_ms) {
                held.pop_front();
            }
            match held.pop_front() {
                Some(slot) => slot,
                None => {
                    // Slots on the interval's grid: each second of the clock holds at most `rate` of them.
                    let on_grid = (now_ms + interval_ms - 1) / interval_ms * interval_ms;
                    let first = self.source.reserve(self.batch, interval_ms, on_grid).await?;
                    held.extend((1..i64::from(self.batch)).map(|n| first + n * interval_ms));
                    first
                }
            }
        };
        let wait_ms = u64::try_from(slot_ms - epoch_ms()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        Ok(())
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Instant;

    use super::*;

    /// The shared schedule as the state table keeps it: the next free slot.
    #[derive(Clone, Default)]
    struct Schedule(Arc<AtomicI64>, Arc<std::sync::Mutex<Vec<i64>>>);

    impl SlotSource for Schedule {
        fn reserve(
            &self,
            count: u32,
            interval_ms: i64,
            now_ms: i64,
        ) -> Pin<Box<dyn Future<Output = Result<i64>> + Send + '_>> {
            let first = self.0.load(Ordering::SeqCst).max(now_ms);
            self.0.store(first + i64::from(count) * interval_ms, Ordering::SeqCst);
            self.1.lock().unwrap().extend((0..i64::from(count)).map(|n| first + n * interval_ms));
            Box::pin(std::future::ready(Ok(first)))
        }
    }

    #[tokio::test]
    async fn the_pacer_spaces_requests_at_the_configured_rate_and_drops_slots_it_did_not_use() {
        let schedule = Schedule::default();
        let pacer = Pacer::shared(20.0, schedule.clone());
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await.unwrap();
        }
        // Four intervals of 50 ms at least (the first slot is the next on the grid).
        assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());

        // After a pause the held slots are past: the next request takes a fresh one at once.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let resumed = Instant::now();
        pacer.wait().await.unwrap();
        assert!(resumed.elapsed() < Duration::from_millis(60), "{:?}", resumed.elapsed());
        assert_eq!(schedule.1.lock().unwrap().len(), 40, "a second's worth reserved twice");
    }

    #[tokio::test]
    async fn pacers_sharing_a_schedule_never_get_two_slots_closer_than_the_pace() {
        let schedule = Schedule::default();
        let pacers: Vec<Arc<Pacer>> = (0..3).map(|_| Arc::new(Pacer::shared(20.0, schedule.clone()))).collect();
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for pacer in &pacers {
            let (pacer, started) = (pacer.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    pacer.wait().await.unwrap();
                    started.lock().unwrap().push(epoch_ms());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let reserved = schedule.1.lock().unwrap().clone();
        let mut sorted = reserved.clone();
        sorted.sort();
        assert!(sorted.windows(2).all(|pair| pair[1] - pair[0] >= 50), "slots 50 ms apart: {sorted:?}");
        let mut started = started.lock().unwrap().clone();
        started.sort();
        let (first, last) = (started[0], started[started.len() - 1]);
        // 30 requests at 20 per second: at least 29 intervals, whatever the containers.
        assert!(last - first >= 29 * 50 - 5, "30 requests took {} ms", last - first);
        // No second holds more than the pace (1 ms of timer slack).
        for (i, start) in started.iter().enumerate() {
            let within = started[i..].iter().take_while(|t| **t < start + 1000 - 1).count();
            assert!(within <= 20, "{within} requests within a second from {start}");
        }
    }
}
