//! Native-task benchmarks for the kernel: the cost of the hot path.
//!
//! Run with `cargo bench -p tiffany-scheduler --bench native` (about two
//! minutes). Every benchmark uses `iter_custom`, so the reported time is per
//! unit of work named in the benchmark id: per yield, per spawned task, per
//! sleeping task, per join. Schedulers are built and tasks spawned outside the
//! timed region wherever the API allows it; the first resume and the final
//! completion of a long-running task are inside it but amortised over tens of
//! thousands of iterations.
//!
//! Groups:
//!
//! - `native_yield_round_trip`: one task doing N `yield_now()` calls (the
//!   round trip: the task yields and is resumed; with nothing else ready the
//!   yield is done in place, without leaving the task's stack), and two
//!   tasks ping-ponging (every yield switches to the other task's
//!   coroutine and back through the ready queue), with the default settings
//!   (real clock, measured CPU accounting, timing metrics on) and with the
//!   per-step clock reads removed (`timing_metrics(false)` +
//!   `Accounting::PerStep`, real and virtual clock).
//! - `native_spawn`: spawn then `run_until_idle` a batch of trivial tasks;
//!   batches of 1,000 fit the per-thread coroutine stack pool (1,024), batches
//!   of 10,000 mostly do not and pay for `mmap`/`munmap` of fresh stacks.
//! - `native_sleep_virtual`: 10,000 tasks sleeping random durations on the
//!   virtual clock (timer heap, clock jumps, wakes), and 1,000 for contrast:
//!   1,000 fit the coroutine pool, 10,000 do not.
//! - `join`: a task spawning a native child and joining it, in a loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tiffany_scheduler::{Accounting, JoinResult, Scheduler, ShardPool, Spawner};

/// The scheduler configurations compared by the yield and join benchmarks.
#[derive(Clone, Copy)]
enum Config {
    /// `Scheduler::builder()`: real clock, `Accounting::Measured`, timing on.
    RealDefault,
    /// Real clock, `timing_metrics(false)`; `Accounting::Measured` still reads
    /// the clock when a task is taken and when it parks.
    RealNoTiming,
    /// Real clock, `timing_metrics(false)`, `Accounting::PerStep`: no clock
    /// read on the hot path at all.
    RealPerStep,
    /// Virtual clock, `timing_metrics(false)`, `Accounting::PerStep` (the
    /// virtual clock's default accounting): no clock read either.
    VirtualPerStep,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::RealDefault => "real_default",
            Config::RealNoTiming => "real_no_timing",
            Config::RealPerStep => "real_per_step_no_timing",
            Config::VirtualPerStep => "virtual_per_step_no_timing",
        }
    }

    fn build(self) -> Scheduler {
        let b = Scheduler::builder();
        let b = match self {
            Config::RealDefault => b,
            Config::RealNoTiming => b.timing_metrics(false),
            Config::RealPerStep => b
                .timing_metrics(false)
                .accounting(Accounting::PerStep(Duration::from_micros(100))),
            Config::VirtualPerStep => b
                .virtual_clock()
                .timing_metrics(false)
                .accounting(Accounting::PerStep(Duration::from_micros(100))),
        };
        b.build().expect("a poller")
    }
}

const CONFIGS: [Config; 4] = [
    Config::RealDefault,
    Config::RealNoTiming,
    Config::RealPerStep,
    Config::VirtualPerStep,
];

/// Runs the scheduler to completion and returns how long that took.
fn timed_run(sched: &Scheduler) -> Duration {
    let start = Instant::now();
    sched.run_until_idle();
    start.elapsed()
}

/// One task yielding `iters` times: the time per yield round trip (the task
/// yields, the scheduler does a turn's bookkeeping, the same task goes on;
/// in place, since nothing else is ready).
fn yield_one_task(config: Config, iters: u64) -> Duration {
    let sched = config.build();
    sched
        .spawn(move |cx| {
            for _ in 0..iters {
                cx.yield_now();
            }
        })
        .expect("spawn");
    let elapsed = timed_run(&sched);
    drop(sched);
    elapsed
}

/// Two tasks yielding `iters` times between them, alternating: the time per
/// yield when every yield switches to the other task's coroutine.
fn yield_ping_pong(config: Config, iters: u64) -> Duration {
    let sched = config.build();
    let a = iters / 2;
    let b = iters - a;
    for n in [a, b] {
        sched
            .spawn(move |cx| {
                for _ in 0..n {
                    cx.yield_now();
                }
            })
            .expect("spawn");
    }
    let elapsed = timed_run(&sched);
    drop(sched);
    elapsed
}

fn native_yield_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_yield_round_trip");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    for config in CONFIGS {
        g.bench_function(format!("one_task/{}", config.name()), |b| {
            b.iter_custom(|iters| yield_one_task(config, iters))
        });
    }
    for config in [Config::RealDefault, Config::VirtualPerStep] {
        g.bench_function(format!("ping_pong/{}", config.name()), |b| {
            b.iter_custom(|iters| yield_ping_pong(config, iters))
        });
    }
    g.finish();
}

/// Spawns `iters` trivial tasks in batches of `batch` and runs each batch to
/// completion. The scheduler is built, and the coroutine pool warmed, outside
/// the timed region.
fn spawn_batches(batch: u64, iters: u64) -> Duration {
    let sched = Scheduler::builder().build().expect("a poller");
    // Warm the per-thread stack pool (and the task table) once.
    for _ in 0..batch.min(1000) {
        sched.spawn(|_| ()).expect("spawn");
    }
    sched.run_until_idle();

    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        left -= n;
        let start = Instant::now();
        for _ in 0..n {
            black_box(sched.spawn(|_| ()).expect("spawn"));
        }
        sched.run_until_idle();
        elapsed += start.elapsed();
    }
    drop(sched);
    elapsed
}

fn native_spawn(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_spawn");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.bench_function("batch_1000_pooled", |b| {
        b.iter_custom(|iters| spawn_batches(1000, iters))
    });
    g.bench_function("batch_10000_mostly_fresh", |b| {
        b.iter_custom(|iters| spawn_batches(10_000, iters))
    });
    g.finish();
}

/// A small deterministic generator (xorshift64*), so runs are comparable
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `tasks` tasks, each sleeping a random duration of 1 µs to 10 s, on the
/// virtual clock. Building the scheduler and spawning are outside the timed
/// region; the run (timer heap, clock jumps, wakes, and dropping the finished
/// coroutines) is inside.
fn sleep_virtual(tasks: u64, iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..iters {
        let sched = Scheduler::builder()
            .virtual_clock()
            .build()
            .expect("a poller");
        for _ in 0..tasks {
            let d = Duration::from_micros(1 + rng.next() % 10_000_000);
            sched.spawn(move |cx| cx.sleep(d)).expect("spawn");
        }
        elapsed += timed_run(&sched);
        assert!(sched.now() <= Duration::from_secs(10) + Duration::from_micros(1));
        drop(sched);
    }
    elapsed
}

fn native_sleep_virtual(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_sleep_virtual");
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(10);
    // Flat sampling: every sample runs the same number of whole scenarios, so
    // the untimed set-up (spawning 10,000 coroutines) stays bounded.
    g.sampling_mode(SamplingMode::Flat);
    // Reported per sleeping task. 10,000 live tasks exceed the per-thread
    // coroutine pool (1,024), so most of their stacks are unmapped during the
    // run; 1,000 fit in it.
    for (tasks, secs) in [(10_000, 5), (1_000, 3)] {
        g.throughput(Throughput::Elements(tasks));
        g.measurement_time(Duration::from_secs(secs));
        g.bench_function(format!("{tasks}_tasks_random_sleep"), |b| {
            b.iter_custom(|iters| sleep_virtual(tasks, iters))
        });
    }
    g.finish();
}

/// One parent task spawning a trivial native child and joining it, `iters`
/// times: spawn syscall, join (blocks), the child runs and ends, the parent
/// is woken with the child's value.
fn join_child(config: Config, iters: u64) -> Duration {
    let sched = config.build();
    sched
        .spawn(move |cx| {
            for i in 0..iters {
                let child = cx.spawn(move |_| i).expect("spawn");
                match cx.join(child) {
                    JoinResult::Success(v) => {
                        black_box(v);
                    }
                    other => panic!("{other:?}"),
                }
            }
        })
        .expect("spawn");
    let elapsed = timed_run(&sched);
    drop(sched);
    elapsed
}

fn join(c: &mut Criterion) {
    let mut g = c.benchmark_group("join");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    for config in [Config::RealDefault, Config::VirtualPerStep] {
        g.bench_function(format!("spawn_and_join_child/{}", config.name()), |b| {
            b.iter_custom(|iters| join_child(config, iters))
        });
    }
    g.finish();
}

/// A CPU-bound piece of work (a few hundred microseconds), kept from being
/// optimised away.
fn burn(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// `tasks` CPU-bound native tasks on a pool of `shards`; returns the wall time.
fn sharded(shards: usize, tasks: u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let pool = ShardPool::new(shards);
        for i in 0..tasks {
            pool.spawn(move |_| black_box(burn(i))).unwrap();
        }
        let start = Instant::now();
        let finished = pool.run();
        total += start.elapsed();
        assert_eq!(finished.len() as u64, tasks, "every task ran");
    }
    total
}

/// Workload 9: the same CPU-bound tasks on 1 and on 2 shards; the speed-up is
/// the ratio of the two times.
fn sharding(c: &mut Criterion) {
    let mut g = c.benchmark_group("sharding");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for shards in [1, 2] {
        g.bench_function(format!("64_cpu_bound_tasks/{shards}_shards"), |b| {
            b.iter_custom(|iters| sharded(shards, 64, iters))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    native_yield_round_trip,
    native_spawn,
    native_sleep_virtual,
    join,
    sharding
);
criterion_main!(benches);
