//! Redis commands and `INFO commandstats` readings shared by the ledger
//! benchmarks (`ledger_scaling.rs`, `debit_cpu.rs`).

pub async fn query<T: redis::FromRedisValue>(
    redis: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut command = redis::cmd(args[0]);
    command.arg(&args[1..]);
    command.query_async(redis).await.expect(args[0])
}

/// Microseconds Redis spent in scripts so far (`EVALSHA` + `EVAL`).
pub async fn script_usec(redis: &mut redis::aio::MultiplexedConnection) -> i64 {
    let stats: String = query(redis, &["INFO", "commandstats"]).await;
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("usec=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<i64>()
                .ok()
        })
        .sum()
}
