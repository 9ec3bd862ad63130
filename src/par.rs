//! Work spread over threads, results in the order of the items: the answer never depends on
//! how many threads ran or in which order they finished.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The machine's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` of every item, on up to `threads` scoped threads (inline for one), in item order. A
/// panic in `f` is passed on to the caller.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    // The scope returned without a panic: every index was taken by exactly one thread.
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .map(|r| r.expect("every item is mapped once the scope returns"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_the_threads() {
        let items: Vec<u64> = (0..500).collect();
        let slow_square = |x: &u64| {
            if x.is_multiple_of(7) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            x * x
        };
        let one = map(&items, 1, slow_square);
        assert_eq!(one[499], 499 * 499);
        for threads in [2, 3, 64] {
            assert_eq!(map(&items, threads, slow_square), one, "{threads} threads");
        }
        assert!(map(&[] as &[u64], 4, slow_square).is_empty());
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            map(&[1, 2, 3, 4], 2, |x| {
                assert_ne!(*x, 3, "three");
                *x
            })
        });
        assert!(r.is_err());
    }
}
